package server

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/ippool/ippool/pool"
)

func TestPoolRoutesLeaveExcludedAddressesOut(t *testing.T) {
	cfg, err := pool.ParseConfig("100.64.1.0/24,198.18.0.0-198.18.0.9", "100.64.1.0", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(poolRoutes(cfg, netip.MustParsePrefix("fd7a:115c:a1e0:b1a::/96")))
	want := "[100.64.1.1/32 100.64.1.2/31 100.64.1.4/30 100.64.1.8/29 100.64.1.16/28 100.64.1.32/27 100.64.1.64/26 100.64.1.128/25 198.18.0.0/29 198.18.0.8/31 fd7a:115c:a1e0:b1a::/96]"
	if got != want {
		t.Fatalf("routes %s, want %s", got, want)
	}
}
