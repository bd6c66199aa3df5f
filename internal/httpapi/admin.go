package httpapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

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

// poolRequest reads and checks a PUT /v1/pool or dry-run body, answering
// the caller itself when it is refused.
func (a *api) poolRequest(w http.ResponseWriter, r *http.Request) (pool.Config, bool) {
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
		return pool.Config{}, false
	}
	cfg, err := pool.ParseConfig(req.Pool, req.Exclude, req.Lifetime)
	if err == nil {
		err = cfg.CheckNew()
	}
	if err != nil {
		a.fail(w, err)
		return pool.Config{}, false
	}
	return cfg, true
}

func (a *api) setPool(w http.ResponseWriter, r *http.Request) {
	cfg, ok := a.poolRequest(w, r)
	if !ok {
		return
	}
	n, err := a.svc.SetPool(r.Context(), cfg)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, wire.Pool{Pool: cfg.PoolString(), Exclude: cfg.ExcludeString(), Lifetime: cfg.Lifetime, Released: &n})
}

// poolDryRun answers what PUT /v1/pool with the same body would release,
// and changes nothing. It is a route of its own rather than a query
// parameter of the PUT, so that a server that does not know it (before
// 0.3.0) refuses it instead of making the change.
func (a *api) poolDryRun(w http.ResponseWriter, r *http.Request) {
	cfg, ok := a.poolRequest(w, r)
	if !ok {
		return
	}
	n, clients, err := a.svc.PoolChangeReleases(r.Context(), cfg)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, wire.Pool{Pool: cfg.PoolString(), Exclude: cfg.ExcludeString(), Lifetime: cfg.Lifetime, Released: &n, ReleasedClients: &clients, DryRun: true})
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
