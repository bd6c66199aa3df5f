package cluster

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/pool"
)

// TestCustomNetworkFormsAClusterAndRefusesWhomItSays runs three servers
// whose cluster port is a Network (here TCP on loopback, dialed by the
// Network's dialer) that finds the others through Peers alone and admits
// only the sources Authorize accepts: they bootstrap, replicate and forward
// without TLS, and a connection from a refused source is closed unread.
func TestCustomNetworkFormsAClusterAndRefusesWhomItSays(t *testing.T) {
	const n = 3
	lns, addrs := loopbackListeners(t, n)
	// 127.0.0.169 stands for a node without the cluster's tag.
	stranger := netip.MustParseAddr("127.0.0.169")
	var dials atomic.Int64
	tc := startCluster(t, n, func(i int, c *Config) {
		c.Insecure, c.Join = false, nil
		c.ClusterAddr = addrs[i]
		c.Network = &Network{
			Name:     "test network",
			Listener: lns[i],
			Dial: func(ctx context.Context, addr string) (net.Conn, error) {
				dials.Add(1)
				var d net.Dialer
				return d.DialContext(ctx, "tcp", addr)
			},
			Authorize: func(c net.Conn) error {
				if c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr() == stranger {
					return errors.New("not one of ours")
				}
				return nil
			},
			Peers: func() []string { return addrs },
		}
	})
	leader := tc.waitReady(n)
	if dials.Load() == 0 {
		t.Fatal("the servers never used the network's dialer")
	}
	// A write through a follower is forwarded over the network.
	var follower *Node
	for _, nd := range tc.nodes {
		if nd != leader {
			follower = nd
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := follower.Propose(ctx, []pool.Op{allocOp(follower, "c1", "example.com")})
	if err != nil || res[0].Err != nil {
		t.Fatalf("a write through a follower: %v %v", err, res)
	}

	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: stranger.AsSlice()}, Timeout: time.Second}
	c, err := d.Dial("tcp", addrs[0])
	if err != nil {
		t.Fatalf("dialing from %v: %v", stranger, err)
	}
	defer c.Close()
	c.Write([]byte{protoRPC})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("a refused peer's connection: read gave %v, want it closed", err)
	}
	poll.Until(t, 5*time.Second, "the refusal to be counted", func() bool { return tc.nodes[0].RefusedPeers() == 1 })
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

// loopbackListeners listens on n loopback ports, for servers whose cluster
// port is a Network of the test's own.
func loopbackListeners(t *testing.T, n int) ([]net.Listener, []string) {
	t.Helper()
	lns := make([]net.Listener, n)
	addrs := make([]string, n)
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i], addrs[i] = ln, ln.Addr().String()
	}
	return lns, addrs
}
