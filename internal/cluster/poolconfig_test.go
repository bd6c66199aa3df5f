package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/pool"
)

// The pool configuration travels as one value (pool.Config's text form) in
// three places: the data dir's record, a server's Info, a join request. In
// each, a configuration that differs from the flags, or does not parse,
// stops the server with an error that shows both.

// startSolo starts a one-server cluster with pool p and waits until the
// pool is in its state.
func startSolo(t *testing.T, cfg Config) *Node {
	t.Helper()
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "the pool to be configured", func() bool {
		_, ok := n.PoolConfig()
		return ok
	})
	return n
}

func TestStoredPoolThatDoesNotParseRefusesStart(t *testing.T) {
	p, _ := pool.ParseConfig("10.0.0.0/24", "", time.Hour)
	dir := t.TempDir()
	cfg := Config{ID: "solo", DataDir: dir, ClusterAddr: freeAddr(t), Pool: &p, Logger: testLogger(t)}
	startSolo(t, cfg).Shutdown()
	path := filepath.Join(dir, recordFile)
	b, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(b), `"pool_config": "pool 10.0.0.0/24 lifetime 1h0m0s"`) {
		t.Fatalf("record %s (%v) does not hold the pool as one value", b, err)
	}
	for _, bad := range []string{
		`{"id":"solo","cluster_addr":"` + cfg.ClusterAddr + `","pool_config":"pool 10.0.0.0/33 lifetime 1h"}`,
		// A record from before pool_config, with a lifetime that does not
		// parse: refused, not read as some default.
		`{"id":"solo","cluster_addr":"` + cfg.ClusterAddr + `","pool":"10.0.0.0/24","lifetime":"forever"}`,
	} {
		if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Start(cfg)
		if err == nil || !strings.Contains(err.Error(), "is corrupt") {
			t.Fatalf("start on record %s: %v; want an error saying it is corrupt", bad, err)
		}
	}
	// A record from before pool_config that parses is still read, and a
	// different pool in the flags is refused with both shown.
	legacy := `{"id":"solo","cluster_addr":"` + cfg.ClusterAddr + `","pool":"10.0.0.0/24","lifetime":"1h0m0s"}`
	os.WriteFile(path, []byte(legacy), 0o600)
	other, _ := pool.ParseConfig("10.9.0.0/24", "", time.Hour)
	cfg.Pool = &other
	if _, err := Start(cfg); err == nil || !strings.Contains(err.Error(), "10.0.0.0/24") || !strings.Contains(err.Error(), "10.9.0.0/24") {
		t.Fatalf("restart with another pool than a legacy record's: %v; want both pools named", err)
	}
}

func TestJoinRequestWithOtherOrUnparsablePoolIsRefused(t *testing.T) {
	p, _ := pool.ParseConfig("10.0.0.0/24", "", time.Hour)
	n := startSolo(t, Config{ID: "solo", DataDir: t.TempDir(), ClusterAddr: freeAddr(t), Pool: &p, Logger: testLogger(t)})
	defer n.Shutdown()
	for body, want := range map[string]string{
		`{"id":"x","addr":"127.0.0.1:1","pool_config":"pool 10.0.0.0/33 lifetime 1h"}`:                                                              "does not decode",
		`{"id":"x","addr":"127.0.0.1:1","pool_config":"pool 10.9.0.0/24 lifetime 1h0m0s","entry_versions":[` + fmt.Sprint(pool.EntryVersion) + `]}`: "the cluster has pool 10.0.0.0/24",
	} {
		err := n.rpc.call(context.Background(), n.ClusterAddr(), rpcJoin, []byte(body), &Info{})
		var re *rpcError
		if !errors.As(err, &re) || re.Code != pool.CodeInvalidConfig || !strings.Contains(re.Message, want) {
			t.Errorf("join with %s: %v; want invalid_config saying %q", body, err, want)
		}
	}
}

// fakePeer answers the cluster port's info RPC with info, as a server that
// speaks the protocol but whose pool configuration is whatever info says.
func fakePeer(t *testing.T, info string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(info))
	})}
	conns := make(chan net.Conn)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(conns)
				return
			}
			var b [1]byte
			if _, err := c.Read(b[:]); err != nil || b[0] != protoRPC {
				c.Close()
				continue
			}
			conns <- c
		}
	}()
	go srv.Serve(&chanConnListener{conns: conns, addr: ln.Addr()})
	t.Cleanup(func() { ln.Close(); srv.Close() })
	return ln.Addr().String()
}

type chanConnListener struct {
	conns chan net.Conn
	addr  net.Addr
}

func (l *chanConnListener) Accept() (net.Conn, error) {
	c, ok := <-l.conns
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (l *chanConnListener) Close() error   { return nil }
func (l *chanConnListener) Addr() net.Addr { return l.addr }

func TestPeerInfoWithOtherOrUnparsablePoolStopsTheJoiningServer(t *testing.T) {
	mine, _ := pool.ParseConfig("10.0.0.0/24", "", time.Hour)
	for info, want := range map[string]string{
		`{"id":"p","addr":"x","pool_config":"pool 10.0.0.0/33 lifetime 1h"}`:     "does not parse",
		`{"id":"p","addr":"x","pool_config":"pool 10.9.0.0/24 lifetime 1h0m0s"}`: "server p has pool 10.9.0.0/24",
	} {
		peer := fakePeer(t, info)
		addr := freeAddr(t)
		n, err := Start(Config{ID: "joiner", DataDir: t.TempDir(), ClusterAddr: addr, Join: []string{addr, peer},
			BootstrapExpect: 2, Pool: &mine, Insecure: true, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-n.Fatal():
			if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "10.0.0.0/24") {
				t.Errorf("peer %s: %v; want it to say %q and show this server's pool", info, err, want)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("peer %s: the joining server kept trying", info)
		}
		n.Shutdown()
	}
}
