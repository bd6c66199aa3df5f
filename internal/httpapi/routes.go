package httpapi

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/internal/console"
	"github.com/ippool/ippool/internal/policy"
)

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
		{"POST /v1/pool/dry-run", acl.RoleAdmin, a.poolDryRun},
		{"GET /v1/policy", acl.RoleRead, a.getPolicy},
		{"PUT /v1/policy", acl.RoleAdmin, a.setPolicy},
		{"POST /v1/policy/test", acl.RoleRead, a.testPolicy},
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
		if r.URL.Path == "/v1/policy" && r.Method == http.MethodPut {
			limit = policy.MaxBytes
		}
		if r.ContentLength > limit {
			tooLarge(r.ContentLength, limit).write(w)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		next.ServeHTTP(w, r)
	})
}
