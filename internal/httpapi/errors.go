package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

// reply is an answer as both HTTP stacks write it (see NewServer).
type reply struct {
	status int
	body   any
	// retryAfter asks the client to retry in a second (503s), or in
	// retrySeconds when set (429 rate_limited).
	retryAfter   bool
	retrySeconds int
}

// bearerChallenge is the WWW-Authenticate header RFC 6750 asks a 401 to carry.
const bearerChallenge = `Bearer realm="ippool"`

func (rep reply) write(w http.ResponseWriter) {
	if rep.retryAfter {
		w.Header().Set("Retry-After", rep.retryAfterHeader())
	}
	if rep.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", bearerChallenge)
	}
	writeJSON(w, rep.status, rep.body)
}

// tooLarge refuses a body over limit; length is the declared one, if any.
func tooLarge(length, limit int64) reply {
	msg := fmt.Sprintf("request body exceeds the limit of %d bytes", limit)
	if length > limit {
		msg = fmt.Sprintf("request body of %d bytes exceeds the limit of %d", length, limit)
	}
	return reply{status: http.StatusRequestEntityTooLarge, body: errorBody("body_too_large", msg)}
}

func errorBody(code, msg string) wire.Error {
	return wire.Error{Code: code, Message: msg}
}

func (a *api) errorReply(err error) reply {
	code := pool.CodeOf(err)
	status := statusOf(code)
	if status == http.StatusInternalServerError {
		a.log.Error("request failed", "err", err)
	}
	secs := retrySecondsOf(err)
	return reply{status: status, body: errorBody(string(code), err.Error()), retryAfter: status == http.StatusServiceUnavailable || secs > 0, retrySeconds: secs}
}

// statusOf maps an error code to an HTTP status (docs/design.md#architecture).
func statusOf(code pool.Code) int {
	switch code {
	case pool.CodeInvalidClient, pool.CodeInvalidDomain, pool.CodeInvalidAddress, pool.CodeInvalidConfig, pool.CodeBadCommand, pool.CodeBadSnapshot, pool.CodeInvalidPolicy:
		return http.StatusBadRequest
	case pool.CodeRevisionMismatch:
		return http.StatusPreconditionFailed
	case pool.CodeDeniedByPolicy:
		return http.StatusForbidden
	case pool.CodeNotFound:
		return http.StatusNotFound
	case pool.CodeUnauthorized:
		return http.StatusUnauthorized
	case pool.CodeForbidden:
		return http.StatusForbidden
	case pool.CodePoolExhausted, pool.CodeAlreadyBootstrapped:
		return http.StatusConflict
	case pool.CodeNoQuorum, pool.CodeNoLeader, pool.CodeNotConfigured, pool.CodeAbortedByRestore, pool.CodeFeatureUnavailable:
		return http.StatusServiceUnavailable
	case pool.CodeQuotaExceeded, pool.CodeRateLimited:
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

func (a *api) fail(w http.ResponseWriter, err error) {
	a.errorReply(err).write(w)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, errorBody(code, msg))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
