// Package bkjob serves BlueKing Job's v3 job-execution APIs (seed 003 and
// docs/bkjob-api-reference.md) with the {result, code, message, data}
// envelope, at the API gateway's, the ESB's and the backend registry's
// paths. As bk-job behind its gateway, a business error (bad parameters,
// a job that does not exist, an operation the job's state refuses, a
// dependency down) is HTTP 200 with result false and bk-job's error code;
// failed authentication is 401, and a path or method that is no API 404
// or 405, as the gateway answers them.
package bkjob

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/api/riskrules"
	"github.com/fleetjob/fleetjob/schemas"
)

// docs/bkjob.md lists the paths, the id scheme, the status mappings and
// every choice where the reference (docs/bkjob-api-reference.md) is loose.
// Files: bkjob.go (routes, envelope, errors, auth, scope, ids), codes.go
// (run status codes and step instance ids), params.go (decoding bodies and
// query strings), hosts.go (hosts and host ids), submit.go
// (fast_execute_script, fast_transfer_file), status.go
// (get_job_instance_status, get_job_instance_list), logs.go (the two log
// APIs), ops.go (operate_job_instance, operate_step_instance).

// BlueKing error codes (bk-job's ErrorCode) this surface answers with.
const (
	bkCodeUnsupportedAPI   = 1239003 // API_NOT_SUPPORT: no such API
	bkCodeUnavailable      = 1240001 // SERVICE_UNAVAILABLE
	bkCodeInternal         = 1240002 // INTERNAL_ERROR
	bkCodeBadRequest       = 1240003 // BAD_REQUEST: malformed request
	bkCodeAuthFailed       = 1240005 // SERVICE_AUTH_FAIL
	bkCodeIllegalParam     = 1241002 // ILLEGAL_PARAM (create time range)
	bkCodeUnsupportedOp    = 1241003 // UNSUPPORTED_OPERATION
	bkCodeInvalidParam     = 1241007 // MISSING_OR_ILLEGAL_PARAM_WITH_PARAM_NAME
	bkCodeNotSupported     = 1241011 // NOT_SUPPORT_FEATURE
	bkCodeScriptNotExist   = 1243001 // SCRIPT_NOT_EXIST
	bkCodeHostIDNotExist   = 1243053 // HOST_ID_NOT_EXIST_IN_CMDB
	bkCodeServerEmpty      = 1244001 // SERVER_EMPTY
	bkCodeHostInvalid      = 1244002 // HOST_INVALID
	bkCodeJobNotExist      = 1244006 // TASK_INSTANCE_NOT_EXIST
	bkCodeStepNotExist     = 1244007 // STEP_INSTANCE_NOT_EXIST
	bkCodeStopping         = 1244015 // TASK_STOPPING_DO_NOT_REPEAT
	bkCodeDangerousScript  = 1244019 // DANGEROUS_SCRIPT_FORBIDDEN_EXECUTION
	bkCodeTimeSpanTooLong  = 1244020 // TASK_INSTANCE_QUERY_TIME_SPAN_MORE_THAN_30_DAYS
	bkCodeBadRollingExpr   = 1244026 // INVALID_ROLLING_EXPR
	bkCodeTooManyBatches   = 1244027 // EXCEED_MAX_ALLOWED_BATCH_SIZE
	bkSurface              = "bkjob"
	bkHeaderAuthorization  = "X-Bkapi-Authorization"
	bkMaxHostsPerLogSearch = 500 // bk-job's MAX_BATCH_SEARCH_LOGS_HOSTS_LIMIT
)

// bkPrefixes are where BlueKing clients call the APIs: the gateway as
// documented and as clients call it (any stage, with and without the
// "system" variant), the gateway's resource registry, and the ESB.
var bkPrefixes = []string{
	"/api/v3/",
	"/api/v3/system/",
	"/api/bk-job/:stage/api/v3/",
	"/api/bk-job/:stage/api/v3/system/",
	"/v2/jobv3/",
	"/api/c/compapi/v2/jobv3/",
}

// isESBPath reports an ESB path, where credentials may come in the body or
// the query string as well as in the header.
func isESBPath(path string) bool { return strings.HasPrefix(path, "/api/c/compapi/") }

// Surface serves the BlueKing routes.
type Surface struct{ core *api.Core }

// New returns the BlueKing surface. Apps authenticate with their own
// bk_app_code and bk_app_secret (or access_token), made by an admin
// (POST /v1/bk-apps); the admin token opens any app code.
func New(core *api.Core) *Surface { return &Surface{core: core} }

// bkRoots are the path roots of the surface: an unknown API under them is
// answered in the BlueKing envelope.
var bkRoots = []string{"/api/v3", "/api/bk-job", "/v2/jobv3", "/api/c/compapi"}

// Register adds every API at every prefix.
func (s *Surface) Register(e *echo.Echo) {
	for _, root := range bkRoots {
		e.RouteNotFound(root+"/*", func(echo.Context) error { return echo.ErrNotFound })
	}
	apis := []struct {
		name  string
		query bool // a read API: GET with a query string as well as POST
		h     echo.HandlerFunc
	}{
		{"fast_execute_script", false, s.bkFastExecuteScript},
		{"fast_transfer_file", false, s.bkFastTransferFile},
		{"get_job_instance_status", true, s.bkGetJobInstanceStatus},
		{"get_job_instance_ip_log", true, s.bkGetJobInstanceIPLog},
		{"batch_get_job_instance_ip_log", false, s.bkBatchGetJobInstanceIPLog},
		{"get_job_instance_list", true, s.bkGetJobInstanceList},
		{"operate_job_instance", false, s.bkOperateJobInstance},
		{"operate_step_instance", false, s.bkOperateStepInstance},
	}
	for _, p := range bkPrefixes {
		for _, a := range apis {
			allowed := "POST"
			if a.query {
				allowed = "GET or POST"
			}
			wrong := func(c echo.Context) error {
				return echo.NewHTTPError(http.StatusMethodNotAllowed, c.Request().Method+" is not allowed here: use "+allowed)
			}
			for _, path := range []string{p + a.name, p + a.name + "/"} {
				e.Any(path, wrong)
				e.POST(path, a.h)
				if a.query {
					e.GET(path, a.h)
				}
			}
		}
	}
}

// bkEnvelope is every answer of the surface. request_id (gateway) and
// job_request_id (bk-job's backend) carry the same value.
type bkEnvelope struct {
	Result       bool   `json:"result"`
	Code         int    `json:"code"`
	Message      string `json:"message"`
	Data         any    `json:"data"`
	RequestID    string `json:"request_id"`
	JobRequestID string `json:"job_request_id"`
}

// bkRequestID is the caller's request id (the gateway's X-Bkapi-Request-Id,
// or X-Request-Id), or a new one, the same for the whole request.
func bkRequestID(c echo.Context) string {
	if id, ok := c.Get("bk_request_id").(string); ok {
		return id
	}
	id := c.Request().Header.Get("X-Bkapi-Request-Id")
	if id == "" {
		id = c.Request().Header.Get("X-Request-Id")
	}
	if id == "" || len(id) > 128 {
		var b [16]byte
		_, _ = rand.Read(b[:])
		id = hex.EncodeToString(b[:])
	}
	c.Set("bk_request_id", id)
	return id
}

// bkOK answers success; message copies each API's documented example.
func bkOK(c echo.Context, message string, data any) error {
	id := bkRequestID(c)
	return c.JSON(http.StatusOK, bkEnvelope{Result: true, Message: message, Data: data, RequestID: id, JobRequestID: id})
}

// bkError carries a BlueKing error code; err wraps the sentinel that picks
// the HTTP status.
type bkError struct {
	code int
	err  error
	msg  string // the text, when err is only the sentinel
}

func (e *bkError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return e.err.Error()
}
func (e *bkError) Unwrap() error { return e.err }

// bkErrorf builds a coded error wrapping sentinel.
func bkErrorf(code int, sentinel error, format string, args ...any) error {
	return &bkError{code: code, err: sentinel, msg: fmt.Sprintf(format, args...)}
}

// WriteError answers an error in the BlueKing envelope: HTTP 200 with
// result false for every error bk-job itself answers, 401 for failed
// authentication, and the gateway's own 404, 405 and 413.
func (s *Surface) WriteError(c echo.Context, err error) {
	code, msg := bkCodeFor(err), api.Message(err)
	status := http.StatusOK
	var he *echo.HTTPError
	if errors.As(err, &he) {
		status = he.Code
		if he.Code == http.StatusNotFound {
			msg = "unsupported API: " + c.Request().Method + " " + c.Request().URL.Path
		}
	}
	var fe schemas.FieldErrors
	if errors.As(err, &fe) {
		msg = "invalid parameters: " + fe.Error()
	}
	switch st := api.StatusOf(err); {
	case errors.Is(err, api.ErrUnauthorized):
		status = http.StatusUnauthorized
	case errors.Is(err, api.ErrRateLimited): // the gateway's own answer
		status = http.StatusTooManyRequests
	case st == 0:
		s.core.Log.Error("bkjob request failed", "path", c.Request().URL.Path, "request_id", bkRequestID(c), "err", err)
		code, msg = bkCodeInternal, "internal error"
	case st == http.StatusServiceUnavailable:
		code = bkCodeUnavailable
	}
	id := bkRequestID(c)
	_ = c.JSON(status, bkEnvelope{Code: code, Message: msg, RequestID: id, JobRequestID: id})
}

// bkCodeFor picks the BlueKing code of an error.
func bkCodeFor(err error) int {
	var be *bkError
	var he *echo.HTTPError
	switch {
	case errors.As(err, &be):
		return be.code
	case errors.As(err, &he):
		switch he.Code {
		case http.StatusNotFound:
			return bkCodeUnsupportedAPI
		case http.StatusUnauthorized:
			return bkCodeAuthFailed
		}
		return bkCodeBadRequest
	case errors.Is(err, api.ErrUnauthorized):
		return bkCodeAuthFailed
	case errors.Is(err, api.ErrForbidden):
		return bkCodePermissionDenied
	case errors.Is(err, api.ErrRateLimited):
		return bkCodeUnavailable
	case errors.Is(err, api.ErrMalformed):
		return bkCodeBadRequest
	case errors.Is(err, api.ErrTooLarge):
		return bkCodeBadRequest
	case errors.Is(err, riskrules.ErrIntercepted):
		return bkCodeDangerousScript
	case errors.Is(err, schemas.ErrInvalid):
		return bkCodeInvalidParam
	case errors.Is(err, schemas.ErrNotFound):
		return bkCodeJobNotExist
	case errors.Is(err, schemas.ErrConflict):
		return bkCodeUnsupportedOp
	case errors.Is(err, schemas.ErrUnavailable):
		return bkCodeUnavailable
	}
	return bkCodeInternal
}

// bkInvalid collects a request's bad fields; the first one's code becomes
// the answer's (1241007 when it has no more specific one).
type bkInvalid struct {
	fe   schemas.FieldErrors
	code int
}

func (v *bkInvalid) add(field, format string, args ...any) { v.addCode(0, field, format, args...) }

func (v *bkInvalid) addCode(code int, field, format string, args ...any) {
	if len(v.fe) == 0 {
		v.code = code
	}
	v.fe.Add(field, format, args...)
}

func (v *bkInvalid) err() error {
	if len(v.fe) == 0 {
		return nil
	}
	code := v.code
	if code == 0 {
		code = bkCodeInvalidParam
	}
	return &bkError{code: code, err: v.fe}
}

// bkCredentials are the app's credentials: the X-Bkapi-Authorization
// header (a JSON object), or on ESB paths the common args of the body or
// query.
type bkCredentials struct {
	AppCode     string `json:"bk_app_code"`
	AppSecret   string `json:"bk_app_secret"`
	Username    string `json:"bk_username"`
	Token       string `json:"bk_token"`
	AccessToken string `json:"access_token"`
	// ESB common args some SDKs always send; accepted and unused.
	SupplierAccount string `json:"bk_supplier_account"`
	SupplierID      bkInt  `json:"bk_supplier_id"`
}

// bkCaller is who made an authenticated request: the app and the user the
// job belongs to (bk_username for an app trusted to assert users, else the
// app itself).
type bkCaller struct {
	app, user string
}

// bkCodePermissionDenied is BlueKing's unified permission error
// (BK_PERMISSION_DENIED), answered HTTP 200 like bk-job's other errors.
const bkCodePermissionDenied = 9900403

// bkAuthenticate is the surface's authentication step: the app's
// credentials from the X-Bkapi-Authorization header or, on ESB paths
// without it, from the request's parameters (params, read only then). An
// app's secret is checked against the identities store (the admin token
// opens any app code). The app is the actor; bk_username becomes the
// acting user only for an app an admin marked trusted to assert users, as
// BlueKing's gateway does for apps exempted from user auth: any other app
// naming another user is refused.
func (s *Surface) bkAuthenticate(c echo.Context, params func() ([]byte, error)) (bkCaller, error) {
	var cred bkCredentials
	h := c.Request().Header.Get(bkHeaderAuthorization)
	switch {
	case h != "":
		if err := json.Unmarshal([]byte(h), &cred); err != nil {
			return bkCaller{}, bkErrorf(bkCodeAuthFailed, api.ErrUnauthorized, "%s is not a JSON object of credentials", bkHeaderAuthorization)
		}
	case isESBPath(c.Request().URL.Path):
		if b, err := params(); err == nil && len(b) > 0 {
			_ = json.Unmarshal(b, &cred) // only the credentials matter here; the parameters are checked later
		}
		if cred.AppCode == "" && cred.AppSecret == "" && cred.AccessToken == "" {
			return bkCaller{}, bkErrorf(bkCodeAuthFailed, api.ErrUnauthorized, "missing %s header", bkHeaderAuthorization)
		}
	default:
		return bkCaller{}, bkErrorf(bkCodeAuthFailed, api.ErrUnauthorized, "missing %s header", bkHeaderAuthorization)
	}
	secret := cred.AppSecret
	if secret == "" {
		secret = cred.AccessToken
	}
	app := strings.TrimSpace(cred.AppCode)
	p, trusted, err := s.core.AuthenticateApp(c.Request().Context(), app, secret)
	if err != nil {
		if errors.Is(err, api.ErrUnauthorized) {
			return bkCaller{}, bkErrorf(bkCodeAuthFailed, api.ErrUnauthorized, "app authentication failed: wrong or missing bk_app_code or bk_app_secret")
		}
		return bkCaller{}, err
	}
	user := strings.TrimSpace(cred.Username)
	switch {
	case user == "" || user == app:
		user = app
	case !trusted:
		return bkCaller{}, bkErrorf(bkCodePermissionDenied, api.ErrForbidden,
			"app %s is not allowed to act as user %s (only apps trusted to assert users may)", app, user)
	default:
		p.Actor, p.App = user, app
	}
	if user == "" {
		user = "admin"
		p.Actor = user
	}
	if err := s.core.Admit(c, p, bkSurface); err != nil {
		return bkCaller{}, err
	}
	return bkCaller{app: app, user: p.Actor}, nil
}

// bkBind authenticates a request and decodes its parameters into v
// strictly: the JSON body, or the query string of a GET (or of a POST that
// has no body). Authentication comes first, and reads the body only on
// ESB paths without the header, so a caller without credentials learns
// nothing about the parameters.
func (s *Surface) bkBind(c echo.Context, v any) (bkCaller, error) {
	var (
		params []byte
		perr   error
		read   bool
	)
	get := func() ([]byte, error) {
		if !read {
			params, perr, read = nil, nil, true
			params, perr = bkParams(c)
		}
		return params, perr
	}
	caller, err := s.bkAuthenticate(c, get)
	if err != nil {
		return caller, err
	}
	if _, err := get(); err != nil {
		return caller, err
	}
	return caller, decodeParams(params, v)
}

// bkCommon is what every request may carry: the scope (or the deprecated
// bk_biz_id) and, on ESB paths, the app's credentials.
type bkCommon struct {
	ScopeType bkString `json:"bk_scope_type"`
	ScopeID   bkString `json:"bk_scope_id"`
	BizID     bkInt    `json:"bk_biz_id"`
	bkCredentials
}

// scope reads bk_scope_type + bk_scope_id, or else the deprecated
// bk_biz_id (a business, or a business set when it lies in bk-job's old
// business-set range 8000000–9999999).
func (r *bkCommon) scope(v *bkInvalid) schemas.Scope {
	switch {
	case r.ScopeType != "" || r.ScopeID != "":
		sc := schemas.Scope{Type: string(r.ScopeType), ID: string(r.ScopeID)}
		if sc.Type != "biz" && sc.Type != "biz_set" {
			v.add("bk_scope_type", "want biz or biz_set, got %q", sc.Type)
		}
		if sc.ID == "" {
			v.add("bk_scope_id", "required with bk_scope_type")
		}
		return sc
	case r.BizID.Set:
		if r.BizID.V < 1 {
			v.add("bk_biz_id", "must be a positive business id")
		}
		sc := schemas.Scope{Type: "biz", ID: strconv.FormatInt(r.BizID.V, 10)}
		if r.BizID.V >= 8000000 && r.BizID.V <= 9999999 {
			sc.Type = "biz_set"
		}
		return sc
	}
	v.add("bk_scope_type", "required: bk_scope_type and bk_scope_id (or the deprecated bk_biz_id)")
	return schemas.Scope{}
}

// legacyBizID is the business id to echo as bk_biz_id, as the older ESB
// generation did, when the request named its scope by bk_biz_id alone.
func (r *bkCommon) legacyBizID() *int64 {
	if r.ScopeType != "" || r.ScopeID != "" || !r.BizID.Set {
		return nil
	}
	id := r.BizID.V
	return &id
}

// bkJob loads a job of the caller's scope; a job of another scope (or of
// none: submitted through another surface) does not exist for the caller.
func (s *Surface) bkJob(ctx context.Context, id int64, sc schemas.Scope) (*schemas.JobSpec, *schemas.JobState, error) {
	spec, st, err := s.core.Jobs.Load(ctx, id)
	if errors.Is(err, schemas.ErrNotFound) || err == nil && (spec.Scope == nil || *spec.Scope != sc) {
		return nil, nil, bkErrorf(bkCodeJobNotExist, schemas.ErrNotFound, "job instance %d does not exist in %s %s", id, sc.Type, sc.ID)
	}
	if err != nil {
		return nil, nil, err
	}
	return spec, st, nil
}

// bkJobID validates a job_instance_id parameter.
func bkJobID(n bkInt, v *bkInvalid) int64 {
	switch {
	case !n.Set:
		v.add("job_instance_id", "required")
	case n.V < 1:
		v.add("job_instance_id", "must be at least 1")
	}
	return n.V
}

// bkStepIndex maps a step_instance_id back to a step of job id. Step
// instance ids are job id × 1000 + step index (BKStepInstanceID).
func bkStepIndex(id int64, n bkInt, spec *schemas.JobSpec) (int, error) {
	job, step := BKStepOf(n.V)
	if n.V < 1 || job != id || step >= len(spec.Steps) {
		return 0, bkErrorf(bkCodeStepNotExist, schemas.ErrNotFound, "step instance %d does not exist in job instance %d", n.V, id)
	}
	return step, nil
}
