package clientid

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestOf(t *testing.T) {
	m, err := Parse("t", strings.NewReader("# comment\n127.0.0.0/8 loopback\n\n127.0.0.4 special # host\n127.0.0.0/16 mid\n::ffff:10.1.0.0/112 mapped\n"))
	if err != nil {
		t.Fatal(err)
	}
	for src, want := range map[string]string{
		"127.0.0.4":        "special",
		"127.0.0.5":        "mid",
		"127.1.0.6":        "loopback",
		"::ffff:127.0.0.4": "special",
		"10.1.2.3":         "mapped",
		"10.2.0.1":         "10.2.0.1",
		"::ffff:10.2.0.1":  "10.2.0.1",
		"fe80::1%eth0":     "fe80::1",
	} {
		got, err := m.Of(netip.MustParseAddr(src))
		if err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", src, got, err, want)
		}
	}
	var none *Map
	if got, err := none.Of(netip.MustParseAddr("10.0.0.1")); err != nil || got != "10.0.0.1" {
		t.Errorf("nil map: %q %v", got, err)
	}
	if _, err := none.Of(netip.Addr{}); err == nil {
		t.Error("invalid address named")
	}
	got, err := m.OfRemote(&net.TCPAddr{IP: net.ParseIP("127.0.0.4"), Port: 9})
	if err != nil || got != "special" {
		t.Errorf("TCP remote: %q %v", got, err)
	}
	got, err = m.OfRemote(&net.UDPAddr{IP: net.ParseIP("::ffff:127.0.0.9"), Port: 9})
	if err != nil || got != "mid" {
		t.Errorf("UDP remote: %q %v", got, err)
	}
	if _, err := m.OfRemote(nil); err == nil {
		t.Error("nil remote named")
	}
}

func TestParseErrors(t *testing.T) {
	for _, text := range []string{"10.0.0.0/8\n", "10.0.0.0/33 x\n", "10.0.0.0/8 bad/id\n", "10.0.0.0/8 a\n10.0.0.1/8 b\n", "x y z\n", "::ffff:0:0/80 x\n"} {
		if _, err := Parse("t", strings.NewReader(text)); err == nil {
			t.Errorf("client map %q accepted", text)
		}
	}
}
