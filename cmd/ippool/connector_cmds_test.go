package main

import (
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// --connector-allow reaches the connector as masked prefixes, and an entry
// that is not a prefix is named with its flag.
func TestConnectorAllowFlag(t *testing.T) {
	var cli CLI
	p, err := newParser(&cli)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Parse([]string{"serve", "--connector-allow", "10.20.1.7/16, 100.64.0.0/10", "--connector-half-close-timeout", "5s"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := cli.Serve.connectorConfig(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("100.64.0.0/10")}
	if !slices.Equal(cfg.Allow, want) || cfg.HalfCloseTimeout.Seconds() != 5 {
		t.Fatalf("Allow %v, HalfCloseTimeout %v", cfg.Allow, cfg.HalfCloseTimeout)
	}
	cli.Serve.ConnectorAllow = []string{"10.0.0.0/8", "private"}
	if _, err := cli.Serve.connectorConfig(slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), `--connector-allow: "private"`) {
		t.Fatalf("a bad entry: %v", err)
	}
}
