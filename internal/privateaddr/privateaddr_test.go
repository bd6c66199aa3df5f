package privateaddr

import (
	"net/netip"
	"testing"
)

func TestIsPrivate(t *testing.T) {
	for addr, want := range map[string]bool{
		"10.99.0.2":         true,
		"100.100.100.200":   true,
		"100.63.255.255":    false,
		"100.128.0.0":       false,
		"127.0.0.1":         true,
		"172.16.0.1":        true,
		"172.32.0.1":        false,
		"192.168.1.1":       true,
		"169.254.169.254":   true,
		"0.1.2.3":           true,
		"255.255.255.255":   true,
		"8.8.8.8":           false,
		"203.0.113.10":      false,
		"::ffff:10.0.0.1":   true,
		"::ffff:8.8.8.8":    false,
		"::1":               true,
		"::":                true,
		"fd7a:115c:a1e0::1": true,
		"fe80::1":           true,
		"ff02::1":           true,
		"2001:db8::1":       false,
		"2606:4700::1111":   false,
	} {
		if got := IsPrivate(netip.MustParseAddr(addr)); got != want {
			t.Errorf("IsPrivate(%s) = %v, want %v", addr, got, want)
		}
	}
	if !IsPrivate(netip.Addr{}) {
		t.Error("the zero address is not private")
	}
}

func TestOwnNetworksHoldLoopback(t *testing.T) {
	var o OwnNetworks
	if !o.IsOwnAddress(netip.MustParseAddr("127.0.0.1")) {
		t.Fatal("127.0.0.1 is not an address of this host")
	}
	if !o.Contains(netip.MustParseAddr("127.0.0.2")) {
		t.Fatal("127.0.0.2 is not in a network of this host")
	}
	if o.Contains(netip.MustParseAddr("203.0.113.77")) {
		t.Fatal("a documentation address is in a network of this host")
	}
}
