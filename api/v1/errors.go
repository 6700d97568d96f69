package v1

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Reasons carried by StatusError; each maps to one HTTP status.
const (
	ReasonBadRequest       = "BadRequest"      // 400: malformed body or query
	ReasonUnauthorized     = "Unauthorized"    // 401: no valid credential
	ReasonForbidden        = "Forbidden"       // 403: the credential may not do this
	ReasonQuotaExceeded    = "QuotaExceeded"   // 403: a create over its tenant's spec.quota
	ReasonInvalid          = "Invalid"         // 422: well-formed but fails validation
	ReasonTooManyRequests  = "TooManyRequests" // 429: over a rate or count limit
	ReasonNotFound         = "NotFound"        // 404
	ReasonAlreadyExists    = "AlreadyExists"   // 409
	ReasonConflict         = "Conflict"        // 409: stale resourceVersion, address taken, dependents exist
	ReasonGone             = "Gone"            // 410: watch from a compacted revision
	ReasonTooLarge         = "RequestEntityTooLarge"
	ReasonMethodNotAllowed = "MethodNotAllowed"
	ReasonUnsupportedMedia = "UnsupportedMediaType"
	ReasonUnavailable      = "ServiceUnavailable"
	ReasonTimeout          = "Timeout"
	ReasonInternal         = "InternalError"
)

// FieldError is one problem with one field, named by its path
// ("spec.cidrs[1]", "metadata.labels[app]").
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (e FieldError) Error() string { return e.Field + ": " + e.Message }

// StatusError is the error every API operation returns and the JSON body of
// every REST error response.
type StatusError struct {
	Code    int          `json:"code"`
	Reason  string       `json:"reason"`
	Message string       `json:"message"`
	Causes  []FieldError `json:"causes,omitempty"`
	// Dependents lists objects that block a delete ("subnet/acme/a").
	Dependents []string `json:"dependents,omitempty"`
}

func (e *StatusError) Error() string {
	if len(e.Causes) == 0 {
		return e.Message
	}
	parts := make([]string, len(e.Causes))
	for i, c := range e.Causes {
		parts[i] = c.Error()
	}
	return e.Message + ": " + strings.Join(parts, "; ")
}

// NewInvalid reports field errors for an object.
func NewInvalid(r Ref, causes []FieldError) *StatusError {
	return &StatusError{Code: http.StatusUnprocessableEntity, Reason: ReasonInvalid,
		Message: fmt.Sprintf("%s is invalid", r), Causes: causes}
}

// NewBadRequest reports a malformed request.
func NewBadRequest(format string, a ...any) *StatusError {
	return &StatusError{Code: http.StatusBadRequest, Reason: ReasonBadRequest, Message: fmt.Sprintf(format, a...)}
}

// NewUnauthorized reports a request without a valid credential.
func NewUnauthorized(format string, a ...any) *StatusError {
	return NewStatus(http.StatusUnauthorized, ReasonUnauthorized, format, a...)
}

// NewForbidden reports a request its credential does not allow. The
// message must not reveal objects the credential cannot see.
func NewForbidden(format string, a ...any) *StatusError {
	return NewStatus(http.StatusForbidden, ReasonForbidden, format, a...)
}

// NewNotFound reports a missing object.
func NewNotFound(r Ref) *StatusError {
	return &StatusError{Code: http.StatusNotFound, Reason: ReasonNotFound, Message: fmt.Sprintf("%s not found", r)}
}

// NewAlreadyExists reports a create of an existing name.
func NewAlreadyExists(r Ref) *StatusError {
	return &StatusError{Code: http.StatusConflict, Reason: ReasonAlreadyExists, Message: fmt.Sprintf("%s already exists", r)}
}

// NewConflict reports a write that lost a race or breaks a uniqueness rule.
func NewConflict(format string, a ...any) *StatusError {
	return &StatusError{Code: http.StatusConflict, Reason: ReasonConflict, Message: fmt.Sprintf(format, a...)}
}

// NewStatus builds a StatusError with any code and reason.
func NewStatus(code int, reason, format string, a ...any) *StatusError {
	return &StatusError{Code: code, Reason: reason, Message: fmt.Sprintf(format, a...)}
}

// ReasonOf returns the Reason of err if it is (or wraps) a StatusError, else "".
func ReasonOf(err error) string {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Reason
	}
	return ""
}

// IsNotFound reports whether err is a NotFound StatusError.
func IsNotFound(err error) bool { return ReasonOf(err) == ReasonNotFound }

// IsAlreadyExists reports whether err is an AlreadyExists StatusError.
func IsAlreadyExists(err error) bool { return ReasonOf(err) == ReasonAlreadyExists }

// IsForbidden reports whether err is a Forbidden StatusError.
func IsForbidden(err error) bool { return ReasonOf(err) == ReasonForbidden }

// IsConflict reports whether err is a Conflict StatusError.
func IsConflict(err error) bool { return ReasonOf(err) == ReasonConflict }
