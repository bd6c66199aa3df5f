package httpapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/internal/service"
)

// The write rate limit is the service's (service.WithCaller); the API names
// the caller of each request that may write: its token, or its source
// address when it sent none (ACLs off, or a public endpoint).

// withCaller names the caller of a write request on the mux.
func (a *api) withCaller(r *http.Request, t acl.Token) *http.Request {
	if !a.svc.LimitsWrites() || r.Method == http.MethodGet || r.Method == http.MethodHead {
		return r
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	src, _ := netip.ParseAddr(host)
	return r.WithContext(service.WithCaller(r.Context(), service.Caller(t, src)))
}

// fastCaller is the context of an allocation on the fast path, naming its
// caller from remote, its source address. It is not the RequestCtx: see
// ownContext.
func (a *api) fastCaller(remote net.IP, t acl.Token) context.Context {
	if !a.svc.LimitsWrites() {
		return context.Background()
	}
	src, _ := netip.AddrFromSlice(remote)
	return service.WithCaller(context.Background(), service.Caller(t, src))
}

// retryAfterHeader is the Retry-After of an answer that has one: the
// seconds a rate limit names, else one (a 503 while a leader is elected).
func (rep reply) retryAfterHeader() string {
	return strconv.Itoa(max(1, rep.retrySeconds))
}

// retrySecondsOf is how long a refused write's caller is asked to wait.
func retrySecondsOf(err error) int {
	var rl *service.RateLimitError
	if errors.As(err, &rl) {
		return int(rl.RetryAfter.Seconds())
	}
	return 0
}
