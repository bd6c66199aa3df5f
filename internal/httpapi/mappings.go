package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"

	"github.com/ippool/ippool/internal/policy"
	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

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

func (a *api) allocReply(ctx context.Context, client, domain string) reply {
	if a.svc.Policy() == nil {
		// No policy: nothing to check, and no second normalisation.
	} else if norm, err := pool.NormalizeDomain(domain); err == nil && pool.ValidateClientID(client) == nil {
		// Over HTTP a client is its ID alone: cidr: selectors read it as
		// an address.
		if err := a.svc.CheckName(&policy.Client{ID: client}, norm); err != nil {
			return a.errorReply(err)
		}
	}
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
