package bkjob

import (
	"encoding/base64"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/schemas"
)

// fast_execute_script and fast_transfer_file: one-step jobs.

// Extra keys a BlueKing job records beside the host ids.
const (
	bkExtraTaskType  = "bk_task_type" // 1 quick script, 2 quick file transfer
	bkExtraApp       = "bk_app_code"
	bkExtraAccountID = "bk_account_id"
)

// BlueKing task types (get_job_instance_list's type).
const (
	bkTaskPlan   = 0
	bkTaskScript = 1
	bkTaskFile   = 2
)

// bkRolling is rolling_config.
type bkRolling struct {
	Expression string `json:"expression"`
	Mode       bkInt  `json:"mode"`
}

// rolling validates rolling_config for n hosts. Mode 4 (bk-job's enum
// value for "manual") is read as 3.
func (r *bkRolling) rolling(n int, v *bkInvalid) *schemas.Rolling {
	if r == nil {
		return nil
	}
	out := &schemas.Rolling{Expr: strings.TrimSpace(r.Expression), Mode: int(r.Mode.V)}
	switch {
	case !r.Mode.Set:
		v.add("rolling_config.mode", "required: 1 (pause on failure), 2 (ignore failures) or 3 (confirm each batch)")
	case r.Mode.V == 4:
		out.Mode = schemas.RollingConfirmEach
	case r.Mode.V < 1 || r.Mode.V > 3:
		v.add("rolling_config.mode", "want 1 (pause on failure), 2 (ignore failures) or 3 (confirm each batch), got %d", r.Mode.V)
	}
	if _, err := schemas.RollingBatches(out.Expr, 1); err != nil {
		v.addCode(bkCodeBadRollingExpr, "rolling_config.expression", "%v", err)
	} else if _, err := schemas.RollingBatches(out.Expr, n); err != nil && n > 0 {
		v.addCode(bkCodeTooManyBatches, "rolling_config.expression", "%v", err)
	}
	return out
}

// bkTimeout reads a timeout: default 7200 seconds, 1 to 86400.
func bkTimeout(n bkInt, v *bkInvalid) int {
	switch {
	case !n.Set:
		return schemas.DefaultTimeoutSecs
	case n.V < 1 || n.V > schemas.MaxTimeoutSeconds:
		v.add("timeout", "want 1 to %d seconds, got %d", schemas.MaxTimeoutSeconds, n.V)
	}
	return int(n.V)
}

// bkAccount reads account_alias / account_id as the alias the core
// resolves. An alias wins; an id alone names the alias an admin gave that
// BlueKing id (bk_account_id), in the job's scope or the global set, and
// an id no alias holds refuses the job: it never falls back to a default.
func (s *Surface) bkAccount(sc schemas.Scope, field string, alias string, id bkInt, v *bkInvalid) string {
	alias = strings.TrimSpace(alias)
	idField := strings.Replace(field, "alias", "id", 1)
	switch {
	case alias == "" && !id.Set:
		v.add(field, "one of %s and %s is required", field, idField)
	case id.Set && id.V < 1:
		v.add(idField, "must be positive")
	case alias == "":
		a, err := s.core.AliasOfBKAccount(sc.String(), id.V, idField)
		var fe schemas.FieldErrors
		if errors.As(err, &fe) {
			v.fe = append(v.fe, fe...)
		} else if err != nil {
			v.add(idField, "%v", err)
		}
		return a
	}
	return alias
}

func bkBase64(field, s string, v *bkInvalid) string {
	s = strings.TrimSpace(s)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		if b, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "=")); err != nil {
			v.add(field, "not Base64: %v", err)
			return ""
		}
	}
	return string(b)
}

// bkScriptRequest is fast_execute_script's body.
type bkScriptRequest struct {
	bkCommon
	ScriptVersionID  bkInt      `json:"script_version_id"`
	ScriptID         bkString   `json:"script_id"`
	ScriptContent    string     `json:"script_content"`
	TaskName         string     `json:"task_name"`
	ScriptParam      string     `json:"script_param"`
	Timeout          bkInt      `json:"timeout"`
	AccountAlias     string     `json:"account_alias"`
	AccountID        bkInt      `json:"account_id"`
	IsParamSensitive bkInt      `json:"is_param_sensitive"`
	ScriptLanguage   bkInt      `json:"script_language"`
	TargetServer     *bkServer  `json:"target_server"`
	CallbackURL      string     `json:"callback_url"`
	RollingConfig    *bkRolling `json:"rolling_config"`
}

// bkInterpreters are the script languages fleetjob runs.
var bkInterpreters = map[int64]string{1: "bash", 4: "python3"}

var bkLanguageNames = map[int64]string{2: "bat", 3: "perl", 5: "powershell"}

func (s *Surface) bkFastExecuteScript(c echo.Context) error {
	var req bkScriptRequest
	caller, err := s.bkBind(c, &req)
	if err != nil {
		return err
	}
	var v bkInvalid
	sc := req.scope(&v)
	hosts := s.bkHosts(nil)
	targets := hosts.targets(req.TargetServer, &v)
	script := &schemas.Script{User: s.bkAccount(sc, "account_alias", req.AccountAlias, req.AccountID, &v)}
	switch {
	case req.ScriptContent != "":
		script.Content = bkBase64("script_content", req.ScriptContent, &v)
	case req.ScriptVersionID.Set || req.ScriptID != "":
		v.addCode(bkCodeScriptNotExist, "script_version_id", "fleetjob has no script library; send the script in script_content")
	default:
		v.add("script_content", "required (Base64 of the script)")
	}
	switch lang := req.ScriptLanguage; {
	case !lang.Set:
		v.add("script_language", "required with script_content: 1 (shell) or 4 (python)")
	case bkInterpreters[lang.V] != "":
		script.Interpreter = bkInterpreters[lang.V]
	case bkLanguageNames[lang.V] != "":
		v.addCode(bkCodeNotSupported, "script_language", "%d (%s) is not supported: fleetjob runs 1 (shell, with bash) and 4 (python, with python3)", lang.V, bkLanguageNames[lang.V])
	default:
		v.add("script_language", "unknown language %d: want 1 (shell) or 4 (python)", lang.V)
	}
	if req.ScriptParam != "" {
		args, err := splitShellWords(bkBase64("script_param", req.ScriptParam, &v))
		if err != nil {
			v.add("script_param", "%v", err)
		}
		script.Args = args
	}
	switch p := req.IsParamSensitive; {
	case !p.Set, p.V == 0:
	case p.V == 1:
		script.Sensitive = true
	default:
		v.add("is_param_sensitive", "want 0 or 1, got %d", p.V)
	}
	step := schemas.Step{Type: schemas.StepScript, Script: script, Targets: targets, Timeout: bkTimeout(req.Timeout, &v),
		Rolling: req.RollingConfig.rolling(len(targets), &v)}
	if err := v.err(); err != nil {
		return err
	}
	spec := s.bkSpec(c, caller, sc, req.TaskName, "API Quick execution script", req.CallbackURL, step)
	return s.bkSubmit(c, spec, bkTaskScript, req.AccountID, hosts.record(targets))
}

// bkFileSource is one entry of file_source_list.
type bkFileSource struct {
	FileList       []string   `json:"file_list"`
	Account        *bkSrcAcct `json:"account"`
	Server         *bkServer  `json:"server"`
	FileType       bkInt      `json:"file_type"`
	FileSourceID   bkInt      `json:"file_source_id"`
	FileSourceCode string     `json:"file_source_code"`
}

// bkSrcAcct is a file source's account.
type bkSrcAcct struct {
	ID    bkInt  `json:"id"`
	Alias string `json:"alias"`
}

// bkFileRequest is fast_transfer_file's body.
type bkFileRequest struct {
	bkCommon
	TaskName           string         `json:"task_name"`
	AccountAlias       string         `json:"account_alias"`
	AccountID          bkInt          `json:"account_id"`
	FileTargetPath     string         `json:"file_target_path"`
	FileTargetName     string         `json:"file_target_name"`
	FileSourceList     []bkFileSource `json:"file_source_list"`
	Timeout            bkInt          `json:"timeout"`
	DownloadSpeedLimit bkInt          `json:"download_speed_limit"`
	UploadSpeedLimit   bkInt          `json:"upload_speed_limit"`
	TransferMode       bkInt          `json:"transfer_mode"`
	TargetServer       *bkServer      `json:"target_server"`
	CallbackURL        string         `json:"callback_url"`
	RollingConfig      *bkRolling     `json:"rolling_config"`
}

func (s *Surface) bkFastTransferFile(c echo.Context) error {
	var req bkFileRequest
	caller, err := s.bkBind(c, &req)
	if err != nil {
		return err
	}
	var v bkInvalid
	sc := req.scope(&v)
	hosts := s.bkHosts(nil)
	targets := hosts.targets(req.TargetServer, &v)
	file := &schemas.FileSpec{
		Owner:       s.bkAccount(sc, "account_alias", req.AccountAlias, req.AccountID, &v),
		Destination: strings.TrimSpace(req.FileTargetPath),
	}
	if file.Destination == "" {
		v.add("file_target_path", "required")
	} else if !path.IsAbs(file.Destination) {
		v.add("file_target_path", "%q is not an absolute path", file.Destination)
	}
	if req.FileTargetName != "" {
		v.addCode(bkCodeNotSupported, "file_target_name", "renaming files is not supported: files keep their names under file_target_path")
	}
	if len(req.FileSourceList) == 0 {
		v.add("file_source_list", "at least one file source is required")
	}
	var sourceHosts [][]schemas.Host
	for i, fs := range req.FileSourceList {
		src, hs := s.bkSource(sc, fmt.Sprintf("file_source_list[%d]", i), fs, hosts, &v)
		file.Sources = append(file.Sources, src)
		sourceHosts = append(sourceHosts, hs)
	}
	for _, lim := range []struct {
		field string
		n     bkInt
		to    *int
	}{{"download_speed_limit", req.DownloadSpeedLimit, &file.DownloadLimitMB}, {"upload_speed_limit", req.UploadSpeedLimit, &file.UploadLimitMB}} {
		if lim.n.Set && (lim.n.V < 0 || lim.n.V > 1<<20) {
			v.add(lim.field, "want a speed in MB/s up to %d (0 or absent: no limit), got %d", 1<<20, lim.n.V)
		}
		*lim.to = int(lim.n.V)
	}
	// bk-job fails a missing source file in both modes; its transfer_mode
	// decides what a missing target directory does: 1 (strict) fails the
	// host, 2 (force, the default) creates the directory.
	strict := true
	file.Strict = &strict
	switch m := req.TransferMode; {
	case !m.Set, m.V == 2:
	case m.V == 1:
		file.DestMustExist = true
	default:
		v.add("transfer_mode", "want 1 (strict) or 2 (force), got %d", m.V)
	}
	step := schemas.Step{Type: schemas.StepFile, File: file, Targets: targets, Timeout: bkTimeout(req.Timeout, &v),
		Rolling: req.RollingConfig.rolling(len(targets), &v)}
	if err := v.err(); err != nil {
		return err
	}
	spec := s.bkSpec(c, caller, sc, req.TaskName, "API Quick Distribution File", req.CallbackURL, step)
	return s.bkSubmit(c, spec, bkTaskFile, req.AccountID, hosts.record(append(sourceHosts, targets)...))
}

// bkSource reads one server file source.
func (s *Surface) bkSource(sc schemas.Scope, p string, fs bkFileSource, hosts *bkHostIndex, v *bkInvalid) (schemas.FileSource, []schemas.Host) {
	var src schemas.FileSource
	if fs.FileType.Set && fs.FileType.V != 1 {
		if fs.FileType.V == 3 {
			v.addCode(bkCodeNotSupported, p+".file_type", "third-party file sources (file_type 3) are not supported: use server files (file_type 1)")
		} else {
			v.add(p+".file_type", "want 1 (server file), got %d", fs.FileType.V)
		}
		return src, nil
	}
	if fs.FileSourceID.Set || fs.FileSourceCode != "" {
		v.addCode(bkCodeNotSupported, p+".file_source_id", "third-party file sources are not supported")
	}
	if fs.Account == nil {
		v.add(p+".account", "required for server files: {\"alias\": …} or {\"id\": …}")
	} else {
		src.Account = s.bkAccount(sc, p+".account.alias", fs.Account.Alias, fs.Account.ID, v)
	}
	before := len(v.fe)
	src.Hosts = hosts.resolve(p+".server", fs.Server, v)
	if len(src.Hosts) == 0 && len(v.fe) == before {
		v.addCode(bkCodeServerEmpty, p+".server", "no source host: give host_id_list or ip_list")
	}
	if len(fs.FileList) == 0 {
		v.add(p+".file_list", "at least one file is required")
	}
	for j, f := range fs.FileList {
		pth, err := bkSourcePath(f)
		if err != nil {
			v.add(fmt.Sprintf("%s.file_list[%d]", p, j), "%v", err)
		}
		src.Paths = append(src.Paths, pth)
	}
	return src, src.Hosts
}

// bkSourcePath reads a source path: an absolute path or glob, or
// BlueKing's "<dir>/REGEX:<expr>", which becomes "REGEX:<dir>/<expr>"
// (the expression matched against the rest of the path below dir). A path
// that already starts with "REGEX:" passes through.
func bkSourcePath(p string) (string, error) {
	p = strings.TrimSpace(p)
	if !utf8.ValidString(p) { // a path the regexp below could not quote
		return p, fmt.Errorf("%q is not valid UTF-8", p)
	}
	if strings.HasPrefix(p, "REGEX:") {
		return p, nil
	}
	if !path.IsAbs(p) {
		return p, fmt.Errorf("%q is not an absolute path", p)
	}
	dir, expr, ok := strings.Cut(p, "REGEX:")
	if !ok {
		return p, nil
	}
	if !strings.HasSuffix(dir, "/") {
		return p, fmt.Errorf("%q: REGEX: must follow a directory (\"/dir/REGEX:expr\")", p)
	}
	if _, err := regexp.Compile(expr); err != nil || expr == "" {
		return p, fmt.Errorf("%q: bad regular expression after REGEX:", p)
	}
	return "REGEX:" + regexp.QuoteMeta(dir) + "(?:" + expr + ")", nil
}

// bkSpec builds a one-step job of the caller's.
func (s *Surface) bkSpec(c echo.Context, caller bkCaller, sc schemas.Scope, name, defName, callback string, step schemas.Step) *schemas.JobSpec {
	name = strings.TrimSpace(name)
	if name == "" {
		name = defName + strconv.FormatInt(time.Now().UnixMilli(), 10)
	}
	step.Name = name
	spec := &schemas.JobSpec{
		Name: name, Owner: caller.user, Source: caller.app, Surface: bkSurface,
		CorrelationID: bkRequestID(c), Scope: &sc, CallbackURL: strings.TrimSpace(callback),
		Steps: []schemas.Step{step}, Extra: map[string]string{},
	}
	if caller.app != "" {
		spec.Extra[bkExtraApp] = caller.app
	}
	return spec
}

// bkSubmit queues a job and answers with its ids.
// bkSubmit records the BlueKing facts a job keeps (task type, account id,
// the host ids it was given) and submits it.
func (s *Surface) bkSubmit(c echo.Context, spec *schemas.JobSpec, taskType int, accountID bkInt, hostIDs string) error {
	spec.Extra[bkExtraTaskType] = strconv.Itoa(taskType)
	if accountID.Set {
		spec.Extra[bkExtraAccountID] = strconv.FormatInt(accountID.V, 10)
	}
	if hostIDs != "" {
		spec.Extra[bkExtraHostIDs] = hostIDs
	}
	id, _, err := s.core.Submit(c.Request().Context(), spec, api.Claim{})
	if err != nil {
		var fe schemas.FieldErrors
		if errors.As(err, &fe) {
			return &bkError{code: bkCodeInvalidParam, err: bkFieldNames(fe)}
		}
		return err
	}
	return bkOK(c, "success", map[string]any{
		"job_instance_id":   id,
		"job_instance_name": spec.Name,
		"step_instance_id":  BKStepInstanceID(id, 0),
	})
}

// bkNativeFields renames the native spec's fields in validation errors
// into the request's (most are checked under their own names before).
var bkNativeFields = []struct{ native, bk string }{
	{"steps[0].script.content", "script_content"},
	{"steps[0].script.interpreter", "script_language"},
	{"steps[0].script.args", "script_param"},
	{"steps[0].script.user", "account_alias"},
	{"steps[0].script", "script_content"},
	{"steps[0].file.destination", "file_target_path"},
	{"steps[0].file.owner", "account_alias"},
	{"steps[0].file.sources", "file_source_list"},
	{"steps[0].file", "file_source_list"},
	{"steps[0].rolling.expr", "rolling_config.expression"},
	{"steps[0].rolling.mode", "rolling_config.mode"},
	{"steps[0].timeout", "timeout"},
	{"steps[0].targets", "target_server"},
	{"steps[0].name", "task_name"},
	{"targets", "target_server"},
	{"name", "task_name"},
}

var bkSourceFields = strings.NewReplacer(".paths", ".file_list", ".hosts", ".server", ".account", ".account.alias")

func bkFieldNames(fe schemas.FieldErrors) schemas.FieldErrors {
	out := make(schemas.FieldErrors, len(fe))
	for i, f := range fe {
		for _, m := range bkNativeFields {
			if rest, ok := strings.CutPrefix(f.Field, m.native); ok {
				f.Field = m.bk + rest
				if m.bk == "file_source_list" {
					f.Field = bkSourceFields.Replace(f.Field)
				}
				break
			}
		}
		out[i] = f
	}
	return out
}

// splitShellWords splits script_param into arguments the way a POSIX
// shell splits words, without any expansion: blanks separate words;
// single quotes keep everything literally; double quotes keep everything
// but a backslash before ", \, $, ` or a newline; outside quotes a
// backslash keeps the next character (and a backslash-newline vanishes).
func splitShellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case r == ' ' || r == '\t' || r == '\n' || r == '\r':
			if inWord {
				words, inWord = append(words, cur.String()), false
				cur.Reset()
			}
		case r == '\\':
			if i+1 == len(rs) {
				return nil, errors.New("ends with a lone backslash")
			}
			i++
			if rs[i] != '\n' {
				cur.WriteRune(rs[i])
				inWord = true
			}
		case r == '\'':
			j := i + 1
			for j < len(rs) && rs[j] != '\'' {
				j++
			}
			if j == len(rs) {
				return nil, errors.New("unterminated single quote")
			}
			cur.WriteString(string(rs[i+1 : j]))
			i, inWord = j, true
		case r == '"':
			j := i + 1
			for ; j < len(rs) && rs[j] != '"'; j++ {
				if rs[j] == '\\' && j+1 < len(rs) && strings.ContainsRune("\"\\$`\n", rs[j+1]) {
					j++
					if rs[j] != '\n' {
						cur.WriteRune(rs[j])
					}
					continue
				}
				cur.WriteRune(rs[j])
			}
			if j == len(rs) {
				return nil, errors.New("unterminated double quote")
			}
			i, inWord = j, true
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	if len(words) > schemas.MaxArgs {
		return nil, fmt.Errorf("%d arguments; at most %d", len(words), schemas.MaxArgs)
	}
	return words, nil
}
