// Package schemas is fleetjob's wire contract: subjects, stream, consumer and
// bucket definitions, the JSON message types with their versions, and the
// validation every surface shares.
package schemas

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// Sentinel errors shared by every surface. Each surface's error handler maps
// them to its own envelope and an HTTP status in one switch.
var (
	// ErrInvalid marks input that fails validation (HTTP 400).
	ErrInvalid = errors.New("invalid input")
	// ErrNotFound marks a missing job, host or agent (HTTP 404).
	ErrNotFound = errors.New("not found")
	// ErrConflict marks a request that clashes with existing state, such as a
	// duplicate task name (HTTP 409).
	ErrConflict = errors.New("conflict")
	// ErrUnavailable marks a dependency that cannot be reached (HTTP 503).
	ErrUnavailable = errors.New("unavailable")
)

// FieldError is one bad field of a request.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// FieldErrors collects every bad field of one request. It wraps ErrInvalid.
type FieldErrors []FieldError

// Add records a bad field.
func (fe *FieldErrors) Add(field, format string, args ...any) {
	*fe = append(*fe, FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
}

// Err returns nil when no field was bad, and the list otherwise.
func (fe FieldErrors) Err() error {
	if len(fe) == 0 {
		return nil
	}
	return fe
}

func (fe FieldErrors) Error() string {
	parts := make([]string, len(fe))
	for i, f := range fe {
		parts[i] = f.Field + ": " + f.Reason
	}
	return strings.Join(parts, "; ")
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (fe FieldErrors) Unwrap() error { return ErrInvalid }

// Invalid returns an error for one bad field.
func Invalid(field, format string, args ...any) error {
	var fe FieldErrors
	fe.Add(field, format, args...)
	return fe
}

// kindError is an error of one of the sentinel kinds whose text is a
// sentence a client may read; cause, when set, is for logs only.
type kindError struct {
	kind  error
	msg   string
	cause error
}

func (e *kindError) Error() string {
	if e.cause != nil {
		return e.msg + ": " + e.cause.Error()
	}
	return e.msg
}

func (e *kindError) Unwrap() []error {
	if e.cause != nil {
		return []error{e.kind, e.cause}
	}
	return []error{e.kind}
}

// NotFound returns an error wrapping ErrNotFound whose text is the message.
func NotFound(format string, args ...any) error {
	return &kindError{kind: ErrNotFound, msg: fmt.Sprintf(format, args...)}
}

// Conflict returns an error wrapping ErrConflict whose text is the message.
func Conflict(format string, args ...any) error {
	return &kindError{kind: ErrConflict, msg: fmt.Sprintf(format, args...)}
}

// Unavailable returns an error wrapping ErrUnavailable and cause: a
// dependency failed while doing what the message says.
func Unavailable(cause error, format string, args ...any) error {
	return &kindError{kind: ErrUnavailable, msg: fmt.Sprintf(format, args...), cause: cause}
}

// Message is the text of err a client may read: the sentence of a
// NotFound, Conflict or Unavailable error (never its cause or the kind's
// own word), the field errors of an invalid request, or else err's text.
func Message(err error) string {
	var ke *kindError
	if errors.As(err, &ke) {
		if ke.kind == ErrUnavailable {
			return ke.msg + ": a dependency is unavailable, try again"
		}
		return ke.msg
	}
	var fe FieldErrors
	if errors.As(err, &fe) {
		return fe.Error()
	}
	return err.Error()
}

// ValueError is a JSON value a type's own decoder refused. encoding/json
// does not say where such a value sat; a decoder that has the whole body
// (the API's) finds it by Raw and Type and names its path.
type ValueError struct {
	Raw    []byte       // the value as sent
	Type   reflect.Type // the type that refused it
	Reason string
}

func (e *ValueError) Error() string { return e.Reason }

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *ValueError) Unwrap() error { return ErrInvalid }
