package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/internal/cluster"
	"github.com/ippool/ippool/internal/fakenode"
	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

// TestWriteRateLimitPerCaller: a caller past its burst is refused with
// rate_limited and a Retry-After, counted; another caller, a request with no
// caller (the DNS front end) and answers S7 gives from local state are not.
func TestWriteRateLimitPerCaller(t *testing.T) {
	node := fakenode.New(t, "10.0.0.0/24", time.Hour)
	metrics := NewMetrics(prometheus.NewRegistry())
	svc := New(node, Options{Metrics: metrics, MarkFlush: time.Hour, WriteRate: 0.5, WriteBurst: 3})
	t.Cleanup(svc.Close)
	a := WithCaller(context.Background(), Caller(acl.Token{Accessor: "0123456789abcdef"}, netip.Addr{}))
	b := WithCaller(context.Background(), Caller(acl.Token{}, netip.MustParseAddr("127.0.0.9")))
	for i := range 3 {
		if _, err := svc.IPForDomain(a, "c1", fmt.Sprintf("d%d.example", i)); err != nil {
			t.Fatalf("write %d within the burst: %v", i, err)
		}
	}
	proposals := node.Proposals.Load()
	_, err := svc.IPForDomain(a, "c1", "d3.example")
	var rl *RateLimitError
	if !errors.As(err, &rl) || !errors.Is(err, pool.ErrRateLimited) || rl.RetryAfter != 2*time.Second {
		t.Fatalf("write past the burst: %v (%+v), want rate_limited retrying in 2s", err, rl)
	}
	for _, write := range []func() error{
		func() error { _, err := svc.Release(a, "c1", "d0.example"); return err },
		func() error { _, err := svc.ReleaseClient(a, "c1"); return err },
		func() error { _, _, err := svc.CreateToken(a, acl.RoleRead, "x"); return err },
	} {
		if err := write(); !errors.Is(err, pool.ErrRateLimited) {
			t.Fatalf("another write past the burst: %v", err)
		}
	}
	if node.Proposals.Load() != proposals {
		t.Fatal("a refused write reached the log")
	}
	if got := testutil.ToFloat64(metrics.RateLimited); got != 4 {
		t.Fatalf("rate limited counted %v times, want 4", got)
	}
	// A known mapping answered from local state is no write.
	for range 10 {
		if _, err := svc.IPForDomain(a, "c1", "d1.example"); err != nil {
			t.Fatalf("a local answer: %v", err)
		}
	}
	if _, err := svc.IPForDomain(b, "c1", "d9.example"); err != nil {
		t.Fatalf("another caller: %v", err)
	}
	for i := range 10 {
		if _, err := svc.IPForDomain(context.Background(), "c2", fmt.Sprintf("d%d.example", i)); err != nil {
			t.Fatalf("no caller: %v", err)
		}
	}
	if n, limit := svc.WriteLimiters(); n != 2 || limit != DefaultWriteLimiters {
		t.Fatalf("write limiters %d of %d, want 2 of %d", n, limit, DefaultWriteLimiters)
	}
}

// TestWriteLimiterIsBounded: the buckets kept never outnumber the bound,
// the least recently used go first, and one evicted comes back full.
func TestWriteLimiterIsBounded(t *testing.T) {
	w := newWriteLimiter(1, 1, 100)
	now := time.Now()
	for i := range 1000 {
		if _, ok := w.allow(fmt.Sprintf("source 10.0.%d.%d", i/256, i%256), now); !ok {
			t.Fatalf("caller %d refused its first write", i)
		}
		if w.size() > 100 {
			t.Fatalf("%d buckets kept, past the bound of 100", w.size())
		}
	}
	if w.evicted != 900 {
		t.Fatalf("%d evicted, want 900", w.evicted)
	}
	if _, ok := w.allow("source 10.0.3.231", now); ok { // the last one, still kept
		t.Fatal("a kept caller's second write in the same instant was allowed")
	}
	if _, ok := w.allow("source 10.0.0.0", now); !ok { // the first one, evicted
		t.Fatal("an evicted caller did not come back with a full bucket")
	}
	if newWriteLimiter(0, 10, 100) != nil {
		t.Fatal("a rate of 0 limits")
	}
}

// TestSetPoolRefusesWhatTheLogWould: a configuration the log entry decoder
// would refuse is refused before anything is proposed.
func TestSetPoolRefusesWhatTheLogWould(t *testing.T) {
	svc, node, _, _ := newFakeService(t, "10.0.0.0/24", time.Hour)
	for _, tc := range []struct {
		pool     string
		lifetime time.Duration
	}{{"127.0.0.0/24", time.Hour}, {"10.0.0.0/24", time.Nanosecond}, {"224.0.0.0/24", time.Hour}} {
		cfg, err := pool.ParseConfig(tc.pool, "", tc.lifetime)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.SetPool(context.Background(), cfg); !errors.Is(err, pool.ErrInvalidConfig) {
			t.Fatalf("%s %v: %v", tc.pool, tc.lifetime, err)
		}
	}
	if node.Proposals.Load() != 0 {
		t.Fatal("a refused configuration was proposed")
	}
}

// TestMaxClientsOnARealNode: the cluster's client bound reaches the
// service's caller as quota_exceeded, counted, and the bound gauges say how
// close the state is.
func TestMaxClientsOnARealNode(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	reg := prometheus.NewRegistry()
	metrics := NewMetrics(reg)
	node, err := cluster.Start(cluster.Config{ID: "solo", DataDir: t.TempDir(), ClusterAddr: addr, Insecure: true, MaxClients: 2, Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	svc := New(node, Options{Metrics: metrics, MarkFlush: time.Hour, Now: node.Now, WriteRate: 100})
	t.Cleanup(func() {
		svc.Close()
		node.Shutdown()
	})
	RegisterClusterGauges(reg, node)
	RegisterBoundGauges(reg, svc, wire.QuotaLimits{MaxClients: 2})
	ctx := WithCaller(context.Background(), "source 127.0.0.1")
	for _, c := range []string{"a", "b"} {
		var err error
		if !poll.Wait(10*time.Second, func() bool { _, err = svc.IPForDomain(ctx, c, "x.example"); return err == nil }) {
			t.Fatalf("client %s: %v", c, err)
		}
	}
	if _, err := svc.IPForDomain(ctx, "c", "x.example"); !errors.Is(err, pool.ErrQuotaExceeded) {
		t.Fatalf("a third client: %v, want quota_exceeded", err)
	}
	if _, err := svc.IPForDomain(ctx, "a", "y.example"); err != nil {
		t.Fatalf("a known client: %v", err)
	}
	if got := testutil.ToFloat64(metrics.QuotaExceeded.WithLabelValues("clients")); got != 1 {
		t.Fatalf("quota refusals counted %v times, want 1", got)
	}
	want := map[string]float64{"ippool_clients": 2, "ippool_max_clients": 2, "ippool_acl_tokens": 0, "ippool_acl_max_tokens": acl.MaxTokens,
		"ippool_http_write_limiters": 1, "ippool_http_write_limiters_max": DefaultWriteLimiters}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if v, ok := want[f.GetName()]; ok {
			if got := f.GetMetric()[0].GetGauge().GetValue(); got != v {
				t.Errorf("%s = %v, want %v", f.GetName(), got, v)
			}
			delete(want, f.GetName())
		}
	}
	if len(want) > 0 {
		t.Errorf("gauges missing: %v", want)
	}
}

// An allocation the local state says is past a quota is refused without a
// proposal only if a read barrier does not change that: the state may not
// yet hold the caller's own release.
func TestQuotaRefusalWaitsForTheBarrier(t *testing.T) {
	svc, node, metrics, _ := newFakeService(t, "10.0.0.0/24", time.Hour)
	quota := pool.Errorf(pool.CodeQuotaExceeded, "client a already holds 2 mappings, its limit (--max-mappings-per-client 2)")
	node.Refuse = func(client, domain string) error {
		if node.Barriers.Load() == 0 {
			return quota
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := svc.IPForDomain(ctx, "a", "x.example"); err != nil {
		t.Fatalf("refused before the barrier, allowed after: %v", err)
	}
	if node.Barriers.Load() != 1 || node.Proposals.Load() != 1 {
		t.Fatalf("%d barriers, %d proposals; want 1 and 1", node.Barriers.Load(), node.Proposals.Load())
	}
	node.Refuse = func(client, domain string) error { return quota }
	if _, err := svc.IPForDomain(ctx, "a", "y.example"); !errors.Is(err, pool.ErrQuotaExceeded) {
		t.Fatalf("refused after the barrier too: %v, want quota_exceeded", err)
	}
	if node.Proposals.Load() != 1 {
		t.Fatalf("a refusal was proposed: %d proposals", node.Proposals.Load())
	}
	if got := testutil.ToFloat64(metrics.QuotaExceeded.WithLabelValues("mappings_per_client")); got != 1 {
		t.Fatalf("refusals counted %v times, want 1", got)
	}
}
