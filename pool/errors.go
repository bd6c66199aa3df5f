package pool

import (
	"errors"
	"fmt"
	"strings"
)

// Code classifies an error so that front ends can map it to a status (HTTP,
// DNS rcode) without parsing its text. The words are part of the HTTP API.
//
// The cluster's codes live here too, though the state machine never
// produces them: every layer's errors travel as *Error, and one list of
// codes is what the front ends map and the API documents. Splitting it by
// package would give the front ends two enums to keep in step.
type Code string

const (
	CodeInvalidClient  Code = "invalid_client"
	CodeInvalidDomain  Code = "invalid_domain"
	CodeInvalidAddress Code = "invalid_address"
	CodeInvalidConfig  Code = "invalid_config"
	CodeNotFound       Code = "not_found"
	CodePoolExhausted  Code = "pool_exhausted"
	CodeNotConfigured  Code = "not_configured"
	CodeBadCommand     Code = "bad_command"
	CodeBadSnapshot    Code = "bad_snapshot"
	// A log entry whose bytes fail their checksum: the copy on this
	// server's disk was damaged after it was written.
	CodeCorruptEntry Code = "corrupt_entry"
	CodeInternal     Code = "internal"
	// The cluster's: the write could not be committed.
	CodeNoQuorum Code = "no_quorum"
	CodeNoLeader Code = "no_leader"
	// A write that a snapshot restore cut off before it was committed; it
	// was not applied, so it is safe to retry.
	CodeAbortedByRestore Code = "aborted_by_restore"
	// CodeFeatureUnavailable: the cluster cannot do this yet because some
	// server runs an older ippool (a mixed-version cluster during an
	// upgrade, or a leader older than the server that forwarded); retry
	// once every server is upgraded.
	CodeFeatureUnavailable Code = "feature_unavailable"
	// Access control's: no valid token (401), a token whose role does not
	// allow the request (403), a second bootstrap (409).
	CodeUnauthorized        Code = "unauthorized"
	CodeForbidden           Code = "forbidden"
	CodeAlreadyBootstrapped Code = "already_bootstrapped"
	// Bounds on the state and on callers: a new client past the cluster's
	// client limit (429 quota_exceeded), a caller past its write rate
	// (429 rate_limited, with Retry-After).
	CodeQuotaExceeded Code = "quota_exceeded"
	CodeRateLimited   Code = "rate_limited"
	// The policy's: a document that does not parse or check (400), a
	// change against a revision that is no longer current (412), and a
	// request the policy refuses (403, naming the rule).
	CodeInvalidPolicy    Code = "invalid_policy"
	CodeRevisionMismatch Code = "revision_mismatch"
	CodeDeniedByPolicy   Code = "denied_by_policy"
)

// The flags that set each quota, as quota_exceeded messages name them;
// QuotaOf reads them back.
const (
	QuotaFlagClients           = "--max-clients"
	QuotaFlagMappings          = "--max-mappings"
	QuotaFlagMappingsPerClient = "--max-mappings-per-client"
	QuotaFlagDomainBytes       = "--max-domain-bytes"
)

// QuotaOf names the quota a quota_exceeded error is about, for a metric
// label: clients, mappings, mappings_per_client or domain_bytes; "" for
// another error. It reads the message, which is what survives forwarding
// from the leader.
func QuotaOf(err error) string {
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeQuotaExceeded {
		return ""
	}
	// The longest flag first: one is a prefix of another.
	for _, q := range []struct{ flag, name string }{
		{QuotaFlagMappingsPerClient, "mappings_per_client"},
		{QuotaFlagMappings, "mappings"},
		{QuotaFlagDomainBytes, "domain_bytes"},
		{QuotaFlagClients, "clients"},
	} {
		if strings.Contains(e.Msg, "("+q.flag+" ") {
			return q.name
		}
	}
	return "other"
}

// Error is the error type of every operation of this package. Its text is a
// sentence meant for an operator; Code is meant for programs.
type Error struct {
	Code Code
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Is makes errors.Is(err, ErrNotFound) and friends match on the code alone.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code && t.Msg == ""
}

// Sentinels for errors.Is; they carry no text of their own.
var (
	ErrInvalidClient    = &Error{Code: CodeInvalidClient}
	ErrInvalidDomain    = &Error{Code: CodeInvalidDomain}
	ErrInvalidAddress   = &Error{Code: CodeInvalidAddress}
	ErrInvalidConfig    = &Error{Code: CodeInvalidConfig}
	ErrNotFound         = &Error{Code: CodeNotFound}
	ErrPoolExhausted    = &Error{Code: CodePoolExhausted}
	ErrNotConfigured    = &Error{Code: CodeNotConfigured}
	ErrBadCommand       = &Error{Code: CodeBadCommand}
	ErrBadSnapshot      = &Error{Code: CodeBadSnapshot}
	ErrCorruptEntry     = &Error{Code: CodeCorruptEntry}
	ErrNoQuorum         = &Error{Code: CodeNoQuorum}
	ErrNoLeader         = &Error{Code: CodeNoLeader}
	ErrAbortedByRestore = &Error{Code: CodeAbortedByRestore}
	ErrQuotaExceeded    = &Error{Code: CodeQuotaExceeded}
	ErrRateLimited      = &Error{Code: CodeRateLimited}
	ErrInvalidPolicy    = &Error{Code: CodeInvalidPolicy}
	ErrRevisionMismatch = &Error{Code: CodeRevisionMismatch}
	ErrDeniedByPolicy   = &Error{Code: CodeDeniedByPolicy}
)

// Errorf returns an *Error with the given code; other packages use it so that
// every error a front end sees carries a code.
func Errorf(code Code, format string, args ...any) *Error { return errorf(code, format, args...) }

func errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of err, or CodeInternal when err is not an *Error.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if _, ok := errors.AsType[*FutureEntryError](err); ok {
		return CodeFeatureUnavailable
	}
	return CodeInternal
}
