package localpool

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/ippool/ippool/pool"
)

func TestLocalPool(t *testing.T) {
	cfg, err := pool.ParseConfig("100.64.0.0/30", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p.Now = func() time.Time { return now }
	ctx := context.Background()
	a, err := p.IPForDomain(ctx, "node1", "Example.com.")
	if err != nil || a != netip.MustParseAddr("100.64.0.0") {
		t.Fatalf("IPForDomain = %v, %v", a, err)
	}
	d, err := p.DomainForIP(ctx, "node1", a, now.Add(time.Minute))
	if err != nil || d != "example.com" {
		t.Fatalf("DomainForIP = %q, %v", d, err)
	}
	if m, _ := p.Get("node1", "example.com"); !m.LastUsed.Equal(now.Add(time.Minute)) {
		t.Fatalf("lookup did not mark the mapping used: %v", m.LastUsed)
	}
	if _, err := p.DomainForIP(ctx, "node2", a, now); !errors.Is(err, pool.ErrNotFound) {
		t.Fatalf("other client's lookup: %v", err)
	}
	if ok, err := p.Release("node1", "example.com"); !ok || err != nil {
		t.Fatalf("Release = %v, %v", ok, err)
	}
	if _, err := p.DomainForIP(ctx, "node1", a, now); !errors.Is(err, pool.ErrNotFound) {
		t.Fatalf("released lookup: %v", err)
	}
}

func TestLocalPoolConcurrent(t *testing.T) {
	cfg, _ := pool.ParseConfig("10.0.0.0/16", "", time.Hour)
	p, _ := New(cfg)
	var wg sync.WaitGroup
	ctx := context.Background()
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				client := fmt.Sprintf("c%d", i%4)
				a, err := p.IPForDomain(ctx, client, fmt.Sprintf("d%d.w%d.com", i, w%2))
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := p.DomainForIP(ctx, client, a, time.Now()); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	total := 0
	for c := range 4 {
		total += len(p.Mappings(fmt.Sprintf("c%d", c)))
	}
	if total != 1000 {
		t.Fatalf("%d mappings, want 1000 (500 domains x 2 sets shared by 4 writers each)", total)
	}
}

// A single process needs no reuse hold: a released address is the lowest
// free one again at once.
func TestReleasedAddressIsReusedAtOnce(t *testing.T) {
	cfg, _ := pool.ParseConfig("10.0.0.0/31", "", time.Hour)
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, _ := p.IPForDomain(ctx, "c", "a.example")
	p.IPForDomain(ctx, "c", "b.example")
	if ok, err := p.Release("c", "a.example"); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if c, err := p.IPForDomain(ctx, "c", "c.example"); err != nil || c != a {
		t.Fatalf("after the release c.example got %v (%v), want the freed %v", c, err, a)
	}
}
