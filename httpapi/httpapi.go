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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/service"
	"github.com/ippool/ippool/wire"
)

// MaxBody bounds request bodies other than snapshot restores: the API's
// requests are small, and a huge body is either a mistake or an attack.
const MaxBody = 64 << 10

// maxSnapshotBody bounds a restore upload.
const maxSnapshotBody = 4 << 30

// Options are the handler's switches.
type Options struct {
	// Pprof serves Go's profiler under /debug/pprof/, as Consul's
	// enable_debug does; off by default because profiles reveal internals.
	Pprof bool
}

// Handler returns the API's handler on net/http. NewServer serves the same
// API, faster.
func Handler(svc *service.Service, gatherer prometheus.Gatherer, log *slog.Logger, opts Options) http.Handler {
	return (&api{svc: svc, log: log}).handler(gatherer, opts)
}

func (a *api) handler(gatherer prometheus.Gatherer, opts Options) http.Handler {
	mux := http.NewServeMux()
	if opts.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("POST /v1/clients/{client}/domains/{domain}", a.alloc)
	mux.HandleFunc("GET /v1/clients/{client}/domains/{domain}", a.get)
	mux.HandleFunc("DELETE /v1/clients/{client}/domains/{domain}", a.release)
	mux.HandleFunc("GET /v1/clients/{client}/ips/{ip}", a.lookup)
	mux.HandleFunc("GET /v1/clients/{client}", a.list)
	mux.HandleFunc("DELETE /v1/clients/{client}", a.releaseClient)
	mux.HandleFunc("GET /v1/cluster", a.cluster)
	mux.HandleFunc("DELETE /v1/cluster/servers/{id}", a.removeServer)
	mux.HandleFunc("GET /v1/snapshot", a.snapshot)
	mux.HandleFunc("PUT /v1/snapshot", a.restore)
	mux.HandleFunc("GET /v1/pool", a.getPool)
	mux.HandleFunc("PUT /v1/pool", a.setPool)
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", a.ready)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return limitBody(mux)
}

// limitBody refuses oversized bodies before any handler runs, so a client
// learns at once that its request is too large and nothing is changed.
func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := int64(MaxBody)
		if r.URL.Path == "/v1/snapshot" && r.Method == http.MethodPut {
			limit = maxSnapshotBody
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
	// retryAfter asks the client to retry in a second (503s).
	retryAfter bool
}

func (rep reply) write(w http.ResponseWriter) {
	if rep.retryAfter {
		w.Header().Set("Retry-After", "1")
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
	return reply{status: status, body: errorBody(string(code), err.Error()), retryAfter: status == http.StatusServiceUnavailable}
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
	m, err := a.svc.Lookup(ctx, client, addr, time.Now())
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
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", err.Error())
		return
	}
	if err := a.svc.Restore(r.Context(), body); err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"restored": true})
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
	case pool.CodePoolExhausted:
		return http.StatusConflict
	case pool.CodeNoQuorum, pool.CodeNoLeader, pool.CodeNotConfigured, pool.CodeAbortedByRestore:
		return http.StatusServiceUnavailable
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
