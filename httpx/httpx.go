// Package httpx is the HTTP plumbing kefu's endpoints share: the JSON error
// envelope and the mapping from core errors to statuses, strict JSON request
// decoding with a size limit, the client address behind trusted proxies, and
// keyed rate limits.
package httpx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kefuhq/kefu/core"
)

// Error codes of the JSON error envelope. Clients switch on the code; the
// message is for people.
const (
	CodeBadRequest   = "bad_request"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeNotFound     = "not_found"
	CodeMethod       = "method_not_allowed"
	CodeConflict     = "conflict"
	CodeCapacity     = "agent_at_capacity"
	CodeWindowClosed = "window_closed"
	CodeTooLarge     = "too_large"
	CodeUnsupported  = "unsupported_media_type"
	CodeRateLimited  = "rate_limited"
	CodeUnavailable  = "unavailable"
	CodeInternal     = "internal"
)

// ErrorBody is the JSON body of every error answer:
// {"error": {"code": "not_found", "message": "…"}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the inside of ErrorBody.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// JSON writes v as a JSON answer with the given status.
func JSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Error writes an error answer.
func Error(w http.ResponseWriter, status int, code, message string) {
	JSON(w, status, ErrorBody{Error: ErrorDetail{Code: code, Message: message}})
}

// TooMany answers 429 with Retry-After in whole seconds (at least 1).
func TooMany(w http.ResponseWriter, retryAfter time.Duration) {
	secs := int(math.Ceil(retryAfter.Seconds()))
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	Error(w, http.StatusTooManyRequests, CodeRateLimited, fmt.Sprintf("too many requests; retry in %d s", secs))
}

// Status maps an error from core, a decoder or a context to an HTTP status
// and an error code.
func Status(err error) (int, string) {
	var re *RequestError
	switch {
	case errors.As(err, &re):
		return re.Status, re.Code
	case errors.Is(err, core.ErrNotFound):
		return http.StatusNotFound, CodeNotFound
	case errors.Is(err, core.ErrCapacity):
		return http.StatusConflict, CodeCapacity
	case errors.Is(err, core.ErrWindowClosed):
		return http.StatusConflict, CodeWindowClosed
	case errors.Is(err, core.ErrConflict):
		return http.StatusConflict, CodeConflict
	case errors.Is(err, core.ErrInvalid):
		return http.StatusBadRequest, CodeBadRequest
	case errors.Is(err, core.ErrForbidden):
		return http.StatusForbidden, CodeForbidden
	case errors.Is(err, core.ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, CodeUnavailable
	}
	return http.StatusInternalServerError, CodeInternal
}

// FromError answers err with the status Status gives. Internal errors are
// logged and answered with a generic message, so that nothing about the
// server leaks; the others carry their own message.
func FromError(w http.ResponseWriter, log *slog.Logger, err error) {
	status, code := Status(err)
	msg := err.Error()
	if status == http.StatusInternalServerError {
		if log != nil {
			log.Error("request failed", "err", err)
		}
		msg = "internal error"
	}
	Error(w, status, code, msg)
}

// RequestError is a problem with a request, with the status to answer.
type RequestError struct {
	Status int
	Code   string
	Msg    string
}

func (e *RequestError) Error() string { return e.Msg }

// BadRequest returns a 400 RequestError.
func BadRequest(format string, args ...any) error {
	return &RequestError{Status: http.StatusBadRequest, Code: CodeBadRequest, Msg: fmt.Sprintf(format, args...)}
}

// DecodeJSON reads a JSON request body of at most maxBytes into v: one
// value, no unknown fields, no trailing data. It returns a *RequestError
// (400, 413 or 415) for a bad body.
func DecodeJSON(w http.ResponseWriter, r *http.Request, maxBytes int64, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return &RequestError{Status: http.StatusUnsupportedMediaType, Code: CodeUnsupported, Msg: "Content-Type must be application/json"}
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &RequestError{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Msg: fmt.Sprintf("body over %d bytes", maxBytes)}
		}
		return BadRequest("could not read the body")
	}
	return Unmarshal(body, v)
}

// Unmarshal decodes one JSON value strictly (no unknown fields, no trailing
// data), returning a 400 RequestError that says what is wrong.
func Unmarshal(data []byte, v any) error {
	// encoding/json turns invalid UTF-8 into U+FFFD: refused, not altered.
	if !utf8.Valid(data) {
		return BadRequest("malformed JSON: not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return BadRequest("malformed JSON: %s", jsonProblem(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return BadRequest("malformed JSON: trailing data after the value")
	}
	// encoding/json matches field names in any case ("Name" sets name),
	// which DisallowUnknownFields lets through: the names must be exact.
	if key := inexactKey(data, reflect.TypeOf(v)); key != "" {
		return BadRequest("malformed JSON: unknown field %q (field names are lower case, as documented)", key)
	}
	return nil
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// inexactKey returns the first object key in data that only matches a field
// of t in another case, or "". data has been decoded into t already.
func inexactKey(data []byte, t reflect.Type) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType) {
		return ""
	}
	switch t.Kind() {
	case reflect.Struct:
		var obj map[string]json.RawMessage
		if json.Unmarshal(data, &obj) != nil {
			return "" // null
		}
		fields := map[string]reflect.Type{}
		jsonFields(t, fields)
		for k, raw := range obj {
			ft, ok := fields[k]
			if !ok {
				return k
			}
			if bad := inexactKey(raw, ft); bad != "" {
				return k + "." + bad
			}
		}
	case reflect.Slice, reflect.Array:
		var items []json.RawMessage
		if json.Unmarshal(data, &items) != nil {
			return ""
		}
		for _, raw := range items {
			if bad := inexactKey(raw, t.Elem()); bad != "" {
				return bad
			}
		}
	case reflect.Map:
		var obj map[string]json.RawMessage
		if json.Unmarshal(data, &obj) != nil {
			return ""
		}
		for _, raw := range obj {
			if bad := inexactKey(raw, t.Elem()); bad != "" {
				return bad
			}
		}
	}
	return ""
}

// jsonFields adds the JSON names of struct t's fields to fields, embedded
// structs' included, as encoding/json names them.
func jsonFields(t reflect.Type, fields map[string]reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				jsonFields(et, fields)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
}

func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		if te.Field != "" {
			return fmt.Sprintf("%s: expected %s, got %s", te.Field, te.Type, te.Value)
		}
		return fmt.Sprintf("expected %s, got %s", te.Type, te.Value)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of input"
	}
	return err.Error() // e.g. `json: unknown field "x"`
}
