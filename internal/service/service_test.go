package service

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ippool/ippool/internal/cluster"
	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/pool"
)

// newService starts a real single-server cluster on loopback with its own
// data dir, and a Service on it with a clock the test moves.
func newService(t *testing.T, poolText string, lifetime time.Duration) (*Service, *Metrics, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg, err := pool.ParseConfig(poolText, "", lifetime)
	if err != nil {
		t.Fatal(err)
	}
	metrics := NewMetrics(prometheus.NewRegistry())
	node, err := cluster.Start(cluster.Config{ID: "solo", DataDir: t.TempDir(), ClusterAddr: addr, Pool: &cfg, Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	var now atomic.Int64
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	svc := New(node, Options{Metrics: metrics, MarkFlush: time.Hour, Now: func() time.Time { return time.Unix(0, now.Load()) }})
	t.Cleanup(func() {
		svc.Close()
		node.Shutdown()
	})
	poll.Until(t, 10*time.Second, "the single server never became a configured leader", func() bool {
		_, ok := node.PoolConfig()
		return ok && node.IsLeader()
	})
	return svc, metrics, &now
}

func TestKnownMappingIsAnsweredWithoutALogEntry(t *testing.T) {
	svc, node, m, now := newFakeService(t, "10.0.0.0/24", time.Hour)
	ctx := context.Background()
	a, err := svc.IPForDomain(ctx, "c", "a.example")
	if err != nil {
		t.Fatal(err)
	}
	before := node.Proposals.Load()
	now.Add(int64(10 * time.Minute))
	b, err := svc.IPForDomain(ctx, "c", "A.example.")
	if err != nil || b != a {
		t.Fatalf("second call: %v %v, want %v", b, err, a)
	}
	if got := node.Proposals.Load(); got != before || node.Barriers.Load() != 0 {
		t.Fatalf("a known mapping on a current server made %d proposals and %d barriers, want none", got-before, node.Barriers.Load())
	}
	if got := testutil.ToFloat64(m.Allocations.WithLabelValues("local")); got != 1 {
		t.Fatalf("local answers counted %v, want 1", got)
	}
	// Past half a lifetime the answer goes through the log to refresh it.
	now.Add(int64(25 * time.Minute))
	if _, err := svc.IPForDomain(ctx, "c", "a.example"); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.Allocations.WithLabelValues("existing")); got != 1 {
		t.Fatalf("refreshes through the log counted %v, want 1", got)
	}
}

func TestReleasedMappingIsNotAnsweredLocally(t *testing.T) {
	svc, _, _, _ := newFakeService(t, "10.0.0.0/31", time.Hour)
	ctx := context.Background()
	a, _ := svc.IPForDomain(ctx, "c", "a.example")
	if ok, err := svc.Release(ctx, "c", "a.example"); !ok || err != nil {
		t.Fatalf("release: %v %v", ok, err)
	}
	// The released address is held from the client (pool.ReuseHold): the
	// next domain gets the other one, and a.example finds none.
	b, err := svc.IPForDomain(ctx, "c", "b.example")
	if err != nil || b == a {
		t.Fatalf("b.example got %v (%v); %v is held after its release", b, err, a)
	}
	c, err := svc.IPForDomain(ctx, "c", "a.example")
	if !errors.Is(err, pool.ErrPoolExhausted) {
		t.Fatalf("a.example came back as %v (%v); want pool_exhausted while %v is held", c, err, a)
	}
}

func TestLookupsCoalesceMarks(t *testing.T) {
	svc, _, m, now := newFakeService(t, "10.0.0.0/24", time.Hour)
	ctx := context.Background()
	a, _ := svc.IPForDomain(ctx, "c", "a.example")
	window := svc.markWindow()
	if window != 5*time.Minute {
		t.Fatalf("mark window %v, want min(5m, lifetime/10) = 5m", window)
	}
	// Many lookups inside one window queue nothing.
	for range 100 {
		now.Add(int64(time.Second))
		if d, err := svc.DomainForIP(ctx, "c", a, time.Unix(0, now.Load())); err != nil || d != "a.example" {
			t.Fatalf("lookup: %q %v", d, err)
		}
	}
	if n := len(svc.marks.take()); n != 0 {
		t.Fatalf("%d marks queued inside the window", n)
	}
	// Past the window, many lookups queue one mark, written in one batch.
	now.Add(int64(window))
	last := time.Time{}
	for range 50 {
		now.Add(int64(time.Millisecond))
		last = time.Unix(0, now.Load())
		svc.DomainForIP(ctx, "c", a, last)
	}
	svc.writeMarks()
	if got := testutil.ToFloat64(m.MarkBatches.WithLabelValues("ok")); got != 1 {
		t.Fatalf("mark batches %v, want 1", got)
	}
	mp, _ := svc.Get("c", "a.example")
	if !mp.LastUsed.Equal(last) {
		t.Fatalf("last used %v, want the latest lookup %v", mp.LastUsed, last)
	}
}

func TestMarkBufferIsBounded(t *testing.T) {
	b := newMarkBuffer(2)
	a1, a2, a3 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	t0 := time.Unix(100, 0)
	if !b.add("c", a1, "x", t0) || !b.add("c", a2, "y", t0) {
		t.Fatal("buffer refused below its bound")
	}
	if b.add("c", a3, "z", t0) {
		t.Fatal("buffer grew past its bound")
	}
	// An update of a queued mark is not a new entry.
	if !b.add("c", a1, "x", t0.Add(time.Second)) {
		t.Fatal("updating a queued mark was refused")
	}
	marks := b.take()
	if len(marks) != 2 {
		t.Fatalf("%d marks", len(marks))
	}
	for _, m := range marks {
		if m.addr == a1 && !m.at.Equal(t0.Add(time.Second)) {
			t.Fatalf("mark kept %v, want the later time", m.at)
		}
	}
}

func TestLookupErrors(t *testing.T) {
	svc, _, m, _ := newFakeService(t, "10.0.0.0/24", time.Hour)
	ctx := context.Background()
	for _, tc := range []struct {
		client string
		addr   string
		want   error
	}{
		{"bad id", "10.0.0.1", pool.ErrInvalidClient},
		{"c", "192.168.0.1", pool.ErrInvalidAddress},
		{"c", "fd00::1", pool.ErrInvalidAddress},
		{"c", "10.0.0.9", pool.ErrNotFound},
	} {
		_, err := svc.Lookup(ctx, tc.client, netip.MustParseAddr(tc.addr), time.Now())
		if !errors.Is(err, tc.want) {
			t.Errorf("Lookup(%q, %s) = %v, want %v", tc.client, tc.addr, err, tc.want.(*pool.Error).Code)
		}
	}
	if got := testutil.ToFloat64(m.Lookups.WithLabelValues("miss")); got != 1 {
		t.Fatalf("confirmed misses counted %v, want 1", got)
	}
}

// A server that is not current answers nothing from its local state: every
// hit and every known allocation goes through the read barrier, and when
// the barrier fails (no quorum) the caller gets that error, not the local
// answer. Expired hits are confirmed even on a current server.
func TestStaleServerConfirmsEveryAnswer(t *testing.T) {
	svc, node, _, now := newFakeService(t, "10.0.0.0/24", time.Hour)
	ctx := context.Background()
	a, err := svc.IPForDomain(ctx, "c", "a.example")
	if err != nil {
		t.Fatal(err)
	}
	at := func() time.Time { return time.Unix(0, now.Load()) }
	node.Current.Store(false)
	if b, err := svc.IPForDomain(ctx, "c", "a.example"); err != nil || b != a || node.Barriers.Load() != 1 {
		t.Fatalf("known allocation on a stale server: %v %v after %d barriers, want %v after 1", b, err, node.Barriers.Load(), a)
	}
	if d, err := svc.DomainForIP(ctx, "c", a, at()); err != nil || d != "a.example" || node.Barriers.Load() != 2 {
		t.Fatalf("lookup hit on a stale server: %q %v after %d barriers, want a.example after 2", d, err, node.Barriers.Load())
	}
	if _, err := svc.GetConsistent(ctx, "c", "a.example"); err != nil || node.Barriers.Load() != 3 {
		t.Fatalf("get on a stale server: %v after %d barriers, want 3", err, node.Barriers.Load())
	}
	if _, err := svc.Mappings(ctx, "c", false); err != nil || node.Barriers.Load() != 4 {
		t.Fatalf("list on a stale server: %v after %d barriers, want 4", err, node.Barriers.Load())
	}
	noQuorum := error(pool.Errorf(pool.CodeNoQuorum, "no quorum"))
	node.BarrierErr.Store(&noQuorum)
	if _, err := svc.DomainForIP(ctx, "c", a, at()); !errors.Is(err, pool.ErrNoQuorum) {
		t.Fatalf("lookup on a stale server without quorum: %v, want no_quorum", err)
	}
	if _, err := svc.IPForDomain(ctx, "c", "a.example"); !errors.Is(err, pool.ErrNoQuorum) {
		t.Fatalf("known allocation on a stale server without quorum: %v, want no_quorum", err)
	}
	// Current again, but the mapping expired: the hit is confirmed.
	node.BarrierErr.Store(nil)
	node.Current.Store(true)
	before := node.Barriers.Load()
	now.Add(int64(2 * time.Hour))
	if _, err := svc.DomainForIP(ctx, "c", a, at()); err != nil || node.Barriers.Load() != before+1 {
		t.Fatalf("expired hit on a current server: %v after %d more barriers, want 1", err, node.Barriers.Load()-before)
	}
}

// TestServiceOnARealNode runs the service on a real single-server cluster:
// the wiring of allocations, lookups, releases, the admin calls and a
// snapshot round trip through Raft.
func TestServiceOnARealNode(t *testing.T) {
	svc, _, _ := newService(t, "10.0.0.0/24", time.Hour)
	ctx := context.Background()
	a, err := svc.IPForDomain(ctx, "c", "a.example")
	if err != nil {
		t.Fatal(err)
	}
	if d, err := svc.DomainForIP(ctx, "c", a, time.Now()); err != nil || d != "a.example" {
		t.Fatalf("lookup: %q %v", d, err)
	}
	if st, notReady := svc.Ready(); notReady != nil || st.LeaderID != "solo" {
		t.Fatalf("ready: %+v %+v", st, notReady)
	}
	var backup bytes.Buffer
	if err := svc.Snapshot(ctx, &backup); err != nil {
		t.Fatal(err)
	}
	if ok, err := svc.Release(ctx, "c", "a.example"); !ok || err != nil {
		t.Fatalf("release: %v %v", ok, err)
	}
	if err := svc.Restore(ctx, bytes.NewReader(backup.Bytes()), int64(backup.Len())); err != nil {
		t.Fatal(err)
	}
	if m, err := svc.GetConsistent(ctx, "c", "a.example"); err != nil || m.Addr != a {
		t.Fatalf("after restoring the backup: %+v %v, want %v", m, err, a)
	}
	if st := svc.Status(ctx); len(st.Servers) != 1 || st.StaleBound == "" {
		t.Fatalf("status: %+v", st)
	}
}
