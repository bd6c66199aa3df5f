package httpapi

import (
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

// The read endpoints behind the web console (package console serves its
// files under /ui/). Their answers are bounded whatever the state's size:
// a page of ranked clients, a picture of one client's pool in at most
// maxCells cells, a page of mappings.

const (
	defaultRankLimit = 20
	maxRankLimit     = 100
	maxCells         = 4096
	// maxPageLimit bounds a page of GET /v1/clients/{client}?limit=.
	maxPageLimit = 1000
)

// statsCounters names the Prometheus counters GET /v1/stats reports, each
// summed over its labels. The DNS and connector ones exist only when
// those front ends run.
var statsCounters = map[string]string{
	"ippool_allocations_total":     "allocations",
	"ippool_reuses_total":          "reuses",
	"ippool_exhaustions_total":     "exhaustions",
	"ippool_lookups_total":         "lookups",
	"ippool_dns_queries_total":     "dns_queries",
	"ippool_connector_flows_total": "connector_flows",
}

func (a *api) stats(gatherer prometheus.Gatherer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		z := a.svc.Sizes()
		out := wire.Stats{Server: a.svc.Local().ID, Time: time.Now().UTC(), PoolSize: z.PoolSize, Clients: z.Clients,
			Mappings: z.Mappings, Domains: z.Domains, HeldAddresses: z.Held, LocalReads: a.svc.LocalReadOK(),
			// The service's counters are there from the start, at 0 until
			// something happens; the front ends' only while they run.
			Counters: map[string]float64{"allocations": 0, "allocations_new": 0, "lookups": 0, "reuses": 0, "exhaustions": 0}}
		mfs, err := gatherer.Gather()
		if err != nil {
			// Gather returns what it could read with the error; a counter
			// that failed is left out rather than the whole answer.
			a.log.Warn("gathering metrics for /v1/stats", "err", err)
		}
		for _, mf := range mfs {
			name, ok := statsCounters[mf.GetName()]
			if !ok {
				continue
			}
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += counterValue(m)
				if mf.GetName() == "ippool_allocations_total" && labelValue(m, "path") == "new" {
					out.Counters["allocations_new"] += counterValue(m)
				}
			}
			out.Counters[name] = sum
		}
		writeJSON(w, http.StatusOK, out)
	}
}

func counterValue(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetUntyped().GetValue()
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// badParam is a query parameter out of its range: 400 bad_request.
type badParam struct{ msg string }

func (e *badParam) Error() string { return e.msg }

// intParam reads an integer query parameter in [lo, hi], def when absent.
func intParam(r *http.Request, name string, def, lo, hi int) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, &badParam{fmt.Sprintf("%s must be a whole number from %d to %d, not %q", name, lo, hi, s)}
	}
	return n, nil
}

// failParam answers a badParam as bad_request and any other error as fail
// does.
func (a *api) failParam(w http.ResponseWriter, err error) {
	if bp, ok := err.(*badParam); ok {
		writeError(w, http.StatusBadRequest, "bad_request", bp.msg)
		return
	}
	a.fail(w, err)
}

func (a *api) topClients(w http.ResponseWriter, r *http.Request) {
	limit, err := intParam(r, "limit", defaultRankLimit, 1, maxRankLimit)
	if err != nil {
		a.failParam(w, err)
		return
	}
	offset, err := intParam(r, "offset", 0, 0, 1<<31-1)
	if err != nil {
		a.failParam(w, err)
		return
	}
	prefix := r.URL.Query().Get("prefix")
	if len(prefix) > pool.MaxClientIDLen {
		a.fail(w, pool.Errorf(pool.CodeInvalidClient, "a client ID prefix has at most %d characters", pool.MaxClientIDLen))
		return
	}
	page, total, size, err := a.svc.TopClients(r.Context(), prefix, offset, limit)
	if err != nil {
		a.fail(w, err)
		return
	}
	out := wire.ClientRanking{PoolSize: size, Total: total, Offset: offset, Clients: make([]wire.ClientUsage, len(page))}
	for i, u := range page {
		out.Clients[i] = usageOut(u)
	}
	writeJSON(w, http.StatusOK, out)
}

func usageOut(u pool.ClientUsage) wire.ClientUsage {
	return wire.ClientUsage{Client: u.Client, Mappings: u.Mappings, Expired: u.Expired, Held: u.Held}
}

func (a *api) occupancy(w http.ResponseWriter, r *http.Request) {
	cells, err := intParam(r, "cells", maxCells, 1, maxCells)
	if err != nil {
		a.failParam(w, err)
		return
	}
	client := r.PathValue("client")
	consistent, _ := strconv.ParseBool(r.URL.Query().Get("consistent"))
	o, err := a.svc.Occupancy(r.Context(), client, cells, consistent)
	if err != nil {
		a.fail(w, err)
		return
	}
	out := wire.Occupancy{Client: client, PoolSize: o.PoolSize, Block: o.Block, Cells: o.Cells, Used: make([][4]int, len(o.Used)), Ranges: make([]wire.AddrRange, len(o.Ranges))}
	for i, c := range o.Used {
		out.Used[i] = [4]int{c.Cell, c.Live, c.Expired, c.Held}
	}
	for i, rg := range o.Ranges {
		out.Ranges[i] = wire.AddrRange{From: rg[0], To: rg[1]}
	}
	writeJSON(w, http.StatusOK, out)
}

// listPage answers GET /v1/clients/{client} given ?limit= (and ?offset=,
// ?from=): one page of the mappings in address order, with the total.
func (a *api) listPage(w http.ResponseWriter, r *http.Request, client string, consistent bool) {
	limit, err := intParam(r, "limit", 0, 1, maxPageLimit)
	if err == nil {
		var offset int
		offset, err = intParam(r, "offset", 0, 0, 1<<31-1)
		var from netip.Addr
		if s := r.URL.Query().Get("from"); err == nil && s != "" {
			if from, err = netip.ParseAddr(s); err != nil || !from.Is4() {
				err = pool.Errorf(pool.CodeInvalidAddress, "from: %q is not an IPv4 address", s)
			}
		}
		if err == nil {
			var page []pool.Mapping
			var total, first int
			if page, total, first, err = a.svc.MappingsPage(r.Context(), client, from, offset, limit, consistent); err == nil {
				out := wire.List{Client: client, Mappings: make([]wire.Mapping, len(page)), Total: &total, Offset: &first}
				for i, m := range page {
					out.Mappings[i] = mappingOut(m)
					out.Mappings[i].Client = ""
				}
				writeJSON(w, http.StatusOK, out)
				return
			}
		}
	}
	a.failParam(w, err)
}
