package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// apiError is an error with a public face: a status, a stable code and a
// message safe to show. Anything else a handler returns is an internal
// error and is shown only as "internal error".
type apiError struct {
	status int
	code   string
	field  string
	msg    string
	hint   string
}

func (e *apiError) Error() string { return e.msg }

func errNotFound(kind, id string) error {
	return &apiError{status: http.StatusNotFound, code: domain.CodeNotFound,
		msg: kind + " " + id + " was not found", hint: "check the ID and the project (MOAT_PROJECT)"}
}

func errForbidden(msg, hint string) error {
	return &apiError{status: http.StatusForbidden, code: "forbidden", msg: msg, hint: hint}
}

func errStale(current int64) error {
	return &apiError{status: http.StatusPreconditionFailed, code: domain.CodeStaleRevision, field: "If-Match",
		msg: "the object changed since you read it (current ETag " + etag(current) + ")", hint: "GET it again, reapply your change, and retry with the new ETag"}
}

var kindStatus = map[domain.Kind]int{
	domain.Invalid:      http.StatusBadRequest,
	domain.Conflict:     http.StatusConflict,
	domain.NotFound:     http.StatusNotFound,
	domain.Precondition: http.StatusPreconditionFailed,
	domain.Forbidden:    http.StatusForbidden,
}

func toAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	if de := domain.AsError(err); de != nil {
		st := kindStatus[de.Kind]
		if st == 0 {
			st = http.StatusBadRequest
		}
		return &apiError{status: st, code: de.Code, field: de.Field, msg: de.Msg, hint: de.Hint}
	}
	if errors.Is(err, store.ErrConflict) {
		return &apiError{status: http.StatusConflict, code: "concurrent_update", msg: "the object was changed by another request at the same time", hint: "retry the request"}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &apiError{status: http.StatusServiceUnavailable, code: "timeout", msg: "the request did not finish in time", hint: "retry the request"}
	}
	return &apiError{status: http.StatusInternalServerError, code: "internal", msg: "internal error", hint: "retry; if it persists, give the operator the request ID"}
}

func (s *Server) writeProblem(w http.ResponseWriter, r *http.Request, e *apiError) {
	p := apitype.Problem{
		Type:      "https://moat.dev/problems/" + e.code,
		Title:     http.StatusText(e.status),
		Status:    e.status,
		Detail:    e.msg,
		Code:      e.code,
		Field:     e.field,
		Hint:      e.hint,
		RequestID: w.Header().Get("X-Request-Id"),
	}
	body, _ := json.Marshal(p)
	w.Header().Set("Content-Type", "application/problem+json")
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="moat"`)
	}
	w.WriteHeader(e.status)
	w.Write(body)
	w.Write([]byte("\n"))
}
