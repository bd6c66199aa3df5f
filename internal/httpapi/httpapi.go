// Package httpapi serves ippool's HTTP API (docs/design.md#architecture): JSON
// under /v1, Prometheus metrics, health and readiness. Handlers parse and
// validate, call the service, and render; they hold no logic of their own.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/internal/console"
	"github.com/ippool/ippool/internal/service"
	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

// MaxBody bounds request bodies other than snapshot restores: the API's
// requests are small, and a huge body is either a mistake or an attack.
const MaxBody = 64 << 10

// Options are the handler's switches.
type Options struct {
	// Pprof serves Go's profiler under /debug/pprof/, as Consul's
	// enable_debug does; off by default because profiles reveal internals.
	Pprof bool
	// LoopbackHostsOnly refuses, with 403 bad_host, every request whose
	// Host is not a loopback name or address. Set it when the server
	// listens on loopback only: no legitimate client names it otherwise,
	// and a web page reaching it through DNS rebinding does.
	LoopbackHostsOnly bool
	// MaxRestoreBytes bounds a snapshot restore's body, which only an
	// admin may send; 0 is wire.DefaultMaxRestoreBytes. The body goes to a file
	// on the server's disk, not to memory.
	MaxRestoreBytes int64

	// NewServer's deadlines. HeaderTimeout bounds a new connection's TLS
	// handshake and request headers, and every later request's headers
	// from their first byte (default 10s); BodyTimeout bounds reading a
	// request's body and writing its answer (default 2m); IdleTimeout
	// closes a kept-alive connection that sends nothing (default 2m).
	HeaderTimeout, BodyTimeout, IdleTimeout time.Duration
}

// Defaults of Options, and of serve's flags that set them.
const (
	DefaultAddr          = "127.0.0.1:7480"
	DefaultHeaderTimeout = 10 * time.Second
	DefaultBodyTimeout   = 2 * time.Minute
	DefaultIdleTimeout   = 2 * time.Minute
)

func (o *Options) setDefaults() {
	if o.MaxRestoreBytes <= 0 {
		o.MaxRestoreBytes = wire.DefaultMaxRestoreBytes
	}
	if o.HeaderTimeout <= 0 {
		o.HeaderTimeout = DefaultHeaderTimeout
	}
	if o.BodyTimeout <= 0 {
		o.BodyTimeout = DefaultBodyTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
}

// Handler returns the API's handler on net/http. NewServer serves the same
// API, faster.
func Handler(svc *service.Service, gatherer prometheus.Gatherer, log *slog.Logger, opts Options) http.Handler {
	opts.setDefaults()
	return (&api{svc: svc, log: log, maxRestore: opts.MaxRestoreBytes}).handler(gatherer, opts)
}

func (a *api) handler(gatherer prometheus.Gatherer, opts Options) http.Handler {
	mux := http.NewServeMux()
	for _, rt := range a.routes(gatherer, opts) {
		mux.Handle(rt.pattern, a.guard(rt.role, rt.handler))
	}
	if opts.LoopbackHostsOnly {
		return loopbackHostsOnly(a.limitBody(mux))
	}
	return a.limitBody(mux)
}

// route is an endpoint and the role a token needs to call it. Every
// endpoint the API serves is in routes, so none can be added without
// deciding who may call it; the e2e access test walks Routes and fails on
// an endpoint it has no case for.
type route struct {
	pattern string
	role    acl.Role
	handler http.HandlerFunc
}

// The roles of the two endpoints serveFast answers without the mux.
const (
	allocRole  = acl.RoleAllocate
	lookupRole = acl.RoleRead
)

func (a *api) routes(gatherer prometheus.Gatherer, opts Options) []route {
	rs := []route{
		{"POST /v1/clients/{client}/domains/{domain}", allocRole, a.alloc},
		{"GET /v1/clients/{client}/ips/{ip}", lookupRole, a.lookup},
		{"GET /v1/clients/{client}/domains/{domain}", acl.RoleRead, a.get},
		{"GET /v1/clients/{client}", acl.RoleRead, a.list},
		{"DELETE /v1/clients/{client}/domains/{domain}", acl.RoleAdmin, a.release},
		{"DELETE /v1/clients/{client}", acl.RoleAdmin, a.releaseClient},
		{"GET /v1/cluster", acl.RoleRead, a.cluster},
		{"DELETE /v1/cluster/servers/{id}", acl.RoleAdmin, a.removeServer},
		{"GET /v1/snapshot", acl.RoleAdmin, a.snapshot},
		{"PUT /v1/snapshot", acl.RoleAdmin, a.restore},
		{"GET /v1/pool", acl.RoleRead, a.getPool},
		{"GET /v1/pool/clients", acl.RoleRead, a.topClients},
		{"GET /v1/clients/{client}/occupancy", acl.RoleRead, a.occupancy},
		{"GET /v1/stats", acl.RoleRead, a.stats(gatherer)},
		{"PUT /v1/pool", acl.RoleAdmin, a.setPool},
		{"POST /v1/acl/bootstrap", acl.RolePublic, a.bootstrapACL},
		{"GET /v1/acl/self", acl.RoleRead, a.aclSelf},
		{"GET /v1/acl/tokens", acl.RoleAdmin, a.listTokens},
		{"POST /v1/acl/tokens", acl.RoleAdmin, a.createToken},
		{"DELETE /v1/acl/tokens/{accessor}", acl.RoleAdmin, a.revokeToken},
		{"GET /metrics", acl.RoleRead, promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}).ServeHTTP},
		{"GET /healthz", acl.RolePublic, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		}},
		{"GET /readyz", acl.RolePublic, a.ready},
		// The console's files hold no data (its pages read the API with
		// the user's token), so anyone may load them.
		{"GET " + console.Prefix, acl.RolePublic, console.Handler().ServeHTTP},
		{"GET /{$}", acl.RolePublic, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, console.Prefix, http.StatusFound)
		}},
		// Unknown paths need a token too, so a stranger cannot map the API.
		{"/", acl.RoleRead, func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
		}},
	}
	if opts.Pprof {
		// Profiles and the command line reveal internals.
		rs = append(rs,
			route{"/debug/pprof/", acl.RoleAdmin, pprof.Index},
			route{"/debug/pprof/cmdline", acl.RoleAdmin, pprof.Cmdline},
			route{"/debug/pprof/profile", acl.RoleAdmin, pprof.Profile},
			route{"/debug/pprof/symbol", acl.RoleAdmin, pprof.Symbol},
			route{"/debug/pprof/trace", acl.RoleAdmin, pprof.Trace})
	}
	return rs
}

// Route is an endpoint's pattern (as net/http's mux takes it) and the role
// it needs.
type Route struct {
	Pattern string
	Role    acl.Role
}

// Routes lists every endpoint the API serves with opts, and its role.
func Routes(opts Options) []Route {
	var out []Route
	for _, rt := range (&api{}).routes(prometheus.NewRegistry(), opts) {
		out = append(out, Route{rt.pattern, rt.role})
	}
	return out
}

// guard runs h only for a request whose token has the role, and names its
// caller for the write rate limit.
func (a *api) guard(role acl.Role, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var t acl.Token
		if role != acl.RolePublic {
			var err error
			if t, err = a.svc.Authorize(bearerToken(r.Header.Get("Authorization")), role); err != nil {
				a.fail(w, err)
				return
			}
		}
		h(w, a.withCaller(r, t))
	})
}

// bearerToken is the token of an "Authorization: Bearer <token>" header, ""
// for any other.
func bearerToken(h string) string {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// limitBody refuses oversized bodies before any handler runs, so a client
// learns at once that its request is too large and nothing is changed.
func (a *api) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := int64(MaxBody)
		if r.URL.Path == "/v1/snapshot" && r.Method == http.MethodPut {
			limit = a.maxRestore
		}
		if r.ContentLength > limit {
			tooLarge(r.ContentLength, limit).write(w)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		next.ServeHTTP(w, r)
	})
}

type api struct {
	svc *service.Service
	log *slog.Logger
	// maxRestore is Options.MaxRestoreBytes.
	maxRestore int64
}

// mappingOut gives the time in UTC, so every server writes the same bytes
// for the same mapping.
func mappingOut(m pool.Mapping) wire.Mapping {
	return wire.Mapping{Client: m.Client, Domain: m.Domain, IP: m.Addr, LastUsed: m.LastUsed.UTC()}
}

// drainBody reads a body the endpoint does not use, so an oversized one is
// refused rather than ignored.
func drainBody(w http.ResponseWriter, r *http.Request) bool {
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			tooLarge(0, mbe.Limit).write(w)
		} else {
			writeError(w, http.StatusBadRequest, "bad_request", "reading the request body: "+err.Error())
		}
		return false
	}
	return true
}

func (a *api) alloc(w http.ResponseWriter, r *http.Request) {
	if !drainBody(w, r) {
		return
	}
	a.allocReply(r.Context(), r.PathValue("client"), r.PathValue("domain")).write(w)
}

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

func (a *api) allocReply(ctx context.Context, client, domain string) reply {
	addr, err := a.svc.IPForDomain(ctx, client, domain)
	if err != nil {
		return a.errorReply(err)
	}
	d, _ := pool.NormalizeDomain(domain)
	return reply{status: http.StatusOK, body: wire.Mapping{Client: client, Domain: d, IP: addr}}
}

func (a *api) get(w http.ResponseWriter, r *http.Request) {
	m, err := a.svc.GetConsistent(r.Context(), r.PathValue("client"), r.PathValue("domain"))
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, mappingOut(m))
}

func (a *api) lookup(w http.ResponseWriter, r *http.Request) {
	a.lookupReply(r.Context(), r.PathValue("client"), r.PathValue("ip")).write(w)
}

func (a *api) lookupReply(ctx context.Context, client, ip string) reply {
	addr, err := netip.ParseAddr(ip)
	if err != nil || !addr.Is4() {
		return reply{status: http.StatusBadRequest, body: errorBody(string(pool.CodeInvalidAddress), fmt.Sprintf("%q is not an IPv4 address", ip))}
	}
	m, err := a.svc.Lookup(ctx, client, addr, a.svc.Now())
	if err != nil {
		return a.errorReply(err)
	}
	return reply{status: http.StatusOK, body: mappingOut(m)}
}

func (a *api) release(w http.ResponseWriter, r *http.Request) {
	if !drainBody(w, r) {
		return
	}
	client, domain := r.PathValue("client"), r.PathValue("domain")
	released, err := a.svc.Release(r.Context(), client, domain)
	if err != nil {
		a.fail(w, err)
		return
	}
	d, _ := pool.NormalizeDomain(domain)
	writeJSON(w, http.StatusOK, wire.Release{Client: client, Domain: d, Released: released})
}

func (a *api) releaseClient(w http.ResponseWriter, r *http.Request) {
	if !drainBody(w, r) {
		return
	}
	client := r.PathValue("client")
	n, err := a.svc.ReleaseClient(r.Context(), client)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, wire.ReleaseClient{Client: client, Released: n})
}

func (a *api) list(w http.ResponseWriter, r *http.Request) {
	client := r.PathValue("client")
	consistent, _ := strconv.ParseBool(r.URL.Query().Get("consistent"))
	if r.URL.Query().Has("limit") {
		a.listPage(w, r, client, consistent)
		return
	}
	ms, err := a.svc.Mappings(r.Context(), client, consistent)
	if err != nil {
		a.fail(w, err)
		return
	}
	out := wire.List{Client: client, Mappings: make([]wire.Mapping, len(ms))}
	for i, m := range ms {
		out.Mappings[i] = mappingOut(m)
		out.Mappings[i].Client = ""
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) cluster(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.svc.Status(r.Context()))
}

func (a *api) removeServer(w http.ResponseWriter, r *http.Request) {
	if !drainBody(w, r) {
		return
	}
	id := r.PathValue("id")
	if err := a.svc.RemoveServer(r.Context(), id); err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"removed": id})
}

func (a *api) snapshot(w http.ResponseWriter, r *http.Request) {
	var buf bytes.Buffer
	if err := a.svc.Snapshot(r.Context(), &buf); err != nil {
		a.fail(w, err)
		return
	}
	// Read after the snapshot: the index is approximate (informational),
	// but never older than the read barrier the snapshot waited for.
	local := a.svc.Local()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Ippool-Index", strconv.FormatUint(local.Applied, 10))
	w.Header().Set("X-Ippool-Term", strconv.FormatUint(local.Term, 10))
	w.Header().Set("X-Ippool-Server", local.ID)
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.Write(buf.Bytes())
}

func (a *api) restore(w http.ResponseWriter, r *http.Request) {
	a.restoreFrom(r.Context(), r.Body).write(w)
}

// restoreFrom restores the backup a request's body carries. The body goes
// to a file on the server's disk, is checked whole there, and is restored
// from there: a backup may be gigabytes, and memory holds only what it
// decodes to.
func (a *api) restoreFrom(ctx context.Context, body io.Reader) reply {
	f, err := a.svc.SpoolFile()
	if err != nil {
		return a.errorReply(err)
	}
	defer f.Close()
	n, err := io.Copy(f, io.LimitReader(body, a.maxRestore+1))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return tooLarge(0, mbe.Limit)
	case err != nil:
		return reply{status: http.StatusBadRequest, body: errorBody("bad_request", "reading the request body: "+err.Error())}
	case n > a.maxRestore:
		return tooLarge(0, a.maxRestore)
	}
	if err := a.svc.Restore(ctx, f, n); err != nil {
		return a.errorReply(err)
	}
	return reply{status: http.StatusOK, body: map[string]bool{"restored": true}}
}

func (a *api) getPool(w http.ResponseWriter, r *http.Request) {
	cfg, ok := a.svc.PoolConfig()
	if !ok {
		writeError(w, http.StatusServiceUnavailable, string(pool.CodeNotConfigured), "the pool is not configured yet")
		return
	}
	writeJSON(w, http.StatusOK, wire.Pool{Pool: cfg.PoolString(), Exclude: cfg.ExcludeString(), Lifetime: cfg.Lifetime,
		ReuseHold: pool.ReuseHold.String(), StaleBound: a.svc.StaleBound().String()})
}

func (a *api) setPool(w http.ResponseWriter, r *http.Request) {
	req, err := wire.DecodePoolRequest(r.Body, pool.DefaultLifetime)
	if err != nil {
		var mbe *http.MaxBytesError
		var le *wire.LifetimeError
		switch {
		case errors.As(err, &mbe):
			writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", err.Error())
		case errors.As(err, &le):
			writeError(w, http.StatusBadRequest, string(pool.CodeInvalidConfig), err.Error())
		default:
			writeError(w, http.StatusBadRequest, "bad_request", "the body must be JSON like {\"pool\":\"10.0.0.0/16\",\"exclude\":\"\",\"lifetime\":\"48h\"}: "+err.Error())
		}
		return
	}
	cfg, err := pool.ParseConfig(req.Pool, req.Exclude, req.Lifetime)
	if err == nil {
		err = cfg.CheckNew()
	}
	if err != nil {
		a.fail(w, err)
		return
	}
	n, err := a.svc.SetPool(r.Context(), cfg)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, wire.Pool{Pool: cfg.PoolString(), Exclude: cfg.ExcludeString(), Lifetime: cfg.Lifetime, Released: &n})
}

// ready reports whether this server knows a leader and has applied what it
// knows to be committed, the point at which its local reads are current.
func (a *api) ready(w http.ResponseWriter, r *http.Request) {
	st, notReady := a.svc.Ready()
	if notReady != nil {
		writeError(w, http.StatusServiceUnavailable, string(notReady.Code), notReady.Msg)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "leader": st.LeaderID, "applied_index": st.Applied})
}

// statusOf maps an error code to an HTTP status (docs/design.md#architecture).
func statusOf(code pool.Code) int {
	switch code {
	case pool.CodeInvalidClient, pool.CodeInvalidDomain, pool.CodeInvalidAddress, pool.CodeInvalidConfig, pool.CodeBadCommand, pool.CodeBadSnapshot:
		return http.StatusBadRequest
	case pool.CodeNotFound:
		return http.StatusNotFound
	case pool.CodeUnauthorized:
		return http.StatusUnauthorized
	case pool.CodeForbidden:
		return http.StatusForbidden
	case pool.CodePoolExhausted, pool.CodeAlreadyBootstrapped:
		return http.StatusConflict
	case pool.CodeNoQuorum, pool.CodeNoLeader, pool.CodeNotConfigured, pool.CodeAbortedByRestore:
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
