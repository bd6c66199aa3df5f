package e2e

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ippool/ippool/internal/ca"
	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcluster"
	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

// The cluster port and the data dir under access control (issue 13), on
// servers started without TLS flags: 127.0.0.71 to 127.0.0.79.

// The protocol bytes that open every cluster connection (internal/cluster/transport.go).
const (
	protoRaft    byte = 'R'
	protoRPC     byte = 'C'
	protoForward byte = 'F'
)

// dialCluster opens a cluster connection as cluster's mux does: TLS unless
// conf is nil, then the protocol byte.
func dialCluster(addr string, conf *tls.Config, proto byte) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if conf != nil {
		tc := tls.Client(c, conf)
		if err := tc.Handshake(); err != nil {
			c.Close()
			return nil, err
		}
		c = tc
	}
	if _, err := c.Write([]byte{proto}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// outsider is a local process without a certificate from the cluster's CA.
type outsider struct {
	name string
	tls  *tls.Config // nil: plain TCP
}

func outsiders(t *testing.T) []outsider {
	t.Helper()
	dir := t.TempDir()
	if _, err := ca.Init(dir, 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	own, err := ca.ServerFiles(filepath.Join(dir, "server-1")).Load()
	if err != nil {
		t.Fatal(err)
	}
	// The outsiders do not check the server: what is under test is that
	// the server checks them.
	own.InsecureSkipVerify = true
	return []outsider{
		{"plain TCP", nil},
		{"TLS without a certificate", &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}},
		{"TLS with a certificate from its own CA", own},
	}
}

// askToJoin posts a join request over the cluster port and returns the
// answer, if any came.
func askToJoin(addr string, conf *tls.Config, id, joinAddr string) (int, string, error) {
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, a string) (net.Conn, error) { return dialCluster(a, conf, protoRPC) },
	}}
	defer cl.CloseIdleConnections()
	resp, err := cl.Post("http://"+addr+"/internal/v1/join", "application/json",
		strings.NewReader(fmt.Sprintf(`{"id":%q,"addr":%q}`, id, joinAddr)))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// getInfo asks for the server's info over the cluster port.
func getInfo(addr string, conf *tls.Config) (int, error) {
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, a string) (net.Conn, error) { return dialCluster(a, conf, protoRPC) },
	}}
	defer cl.CloseIdleConnections()
	resp, err := cl.Get("http://" + addr + "/internal/v1/info")
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// outsiderLayer is a raft.StreamLayer dialing the cluster port the
// outsider's way.
type outsiderLayer struct {
	net.Listener
	conf *tls.Config
}

func (l outsiderLayer) Dial(a raft.ServerAddress, _ time.Duration) (net.Conn, error) {
	return dialCluster(string(a), l.conf, protoRaft)
}

// requestVote sends a real Raft RequestVote for term, from a candidate
// whose log is far ahead.
func requestVote(t *testing.T, addr string, conf *tls.Config, term uint64) (raft.RequestVoteResponse, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.72:0")
	if err != nil {
		t.Fatal(err)
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: outsiderLayer{ln, conf}, MaxPool: 1, Timeout: 5 * time.Second, Logger: hclog.NewNullLogger()})
	defer trans.Close()
	req := &raft.RequestVoteRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("outsider"), Addr: []byte(ln.Addr().String())},
		Term:      term, LastLogIndex: 1 << 40, LastLogTerm: term,
	}
	var resp raft.RequestVoteResponse
	err = trans.RequestVote("s1", raft.ServerAddress(addr), req, &resp)
	return resp, err
}

// forwardAlloc sends one forwarded allocation frame (internal/cluster/forward.go)
// and returns the answer frame's body.
func forwardAlloc(addr string, conf *tls.Config, client string) ([]byte, error) {
	c, err := dialCluster(addr, conf, protoForward)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	body, err := pool.EncodeEntry(nil, pool.Entry{Time: time.Now(), Ops: []pool.Op{{Kind: pool.OpAllocate,
		ID: pool.RequestID{Origin: 7, Seq: 1}, Client: client, Domain: "outsider.example"}}})
	if err != nil {
		return nil, err
	}
	frame := binary.BigEndian.AppendUint32(nil, uint32(8+len(body)))
	frame = binary.BigEndian.AppendUint64(frame, 1)
	if _, err := c.Write(append(frame, body...)); err != nil {
		return nil, err
	}
	var h [12]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return nil, err
	}
	answer := make([]byte, binary.BigEndian.Uint32(h[:4])-8)
	_, err = io.ReadFull(c, answer)
	return answer, err
}

// TestOutsiderCannotJoinVoteOrForward starts a server without TLS flags,
// which makes its own CA, and has local processes without that CA's
// certificate try each protocol of the cluster port. A process holding a
// certificate from `ippool tls issue` then does the same, to show the
// attempts were well formed.
func TestOutsiderCannotJoinVoteOrForward(t *testing.T) {
	bin := testcluster.Binary(t)
	c := testcluster.New(t, 1, testcluster.Options{FirstIP: 71, NoTLSFlags: true})
	s := c.Servers[0]
	s.Start()
	c.WaitReady(30 * time.Second)
	before, err := s.Status()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.DataDir, "tls", "ca-key.pem")); err != nil {
		t.Fatalf("the server made no CA in its data dir: %v", err)
	}

	for i, o := range outsiders(t) {
		if status, body, err := askToJoin(s.ClusterAddr, o.tls, "outsider", "127.0.0.72:7481"); err == nil {
			t.Errorf("%s: the join request was answered: %d %s", o.name, status, body)
		}
		if resp, err := requestVote(t, s.ClusterAddr, o.tls, before.Term+100); err == nil {
			t.Errorf("%s: the vote request was answered: %+v", o.name, resp)
		}
		if answer, err := forwardAlloc(s.ClusterAddr, o.tls, fmt.Sprintf("outsider-%d", i)); err == nil {
			t.Errorf("%s: the forwarded write was answered: %q", o.name, answer)
		}
	}

	after, err := s.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Servers) != 1 || !after.Servers[0].Voter || after.Servers[0].ID != s.ID {
		t.Fatalf("the configuration is now %+v, want %s alone", after.Servers, s.ID)
	}
	if after.LeaderID != s.ID || after.Term != before.Term {
		t.Fatalf("leader %q in term %d after the attempts, want %s still in term %d", after.LeaderID, after.Term, s.ID, before.Term)
	}
	ctx := context.Background()
	for i := range outsiders(t) {
		status, body, err := s.Do(ctx, http.MethodGet, fmt.Sprintf("/v1/clients/outsider-%d", i), nil)
		if err != nil || status != 200 || strings.Contains(string(body), "outsider.example") {
			t.Fatalf("outsider-%d's mappings: %d %s %v, want none", i, status, body, err)
		}
	}
	if _, err := alloc(ctx, s, "node1", "example.com"); err != nil {
		t.Fatalf("a write after the attempts: %v", err)
	}

	// With a certificate from the server's CA the same requests are served
	// (the vote is refused by Raft itself: the candidate is no member).
	out := filepath.Join(t.TempDir(), "insider")
	mustCLI(t, bin, "tls", "issue", "--ca-dir", s.DataDir, "--out", out)
	insider, err := ca.ServerFiles(out).Load()
	if err != nil {
		t.Fatal(err)
	}
	if status, err := getInfo(s.ClusterAddr, insider); err != nil || status != 200 {
		t.Fatalf("an insider's info request: %d %v", status, err)
	}
	if resp, err := requestVote(t, s.ClusterAddr, insider, before.Term+100); err != nil || resp.Granted {
		t.Fatalf("an insider's vote request: %+v %v, want an answer refusing the vote", resp, err)
	}
	if _, err := forwardAlloc(s.ClusterAddr, insider, "insider"); err != nil {
		t.Fatalf("an insider's forwarded write: %v", err)
	}
}

// TestDataDirIsOwnerOnly starts a server on a data dir made 0755 with a
// 0644 file in it, as systemd's StateDirectory and a careless copy leave
// one, writes until it has taken a snapshot, and finds every directory 0700
// and every file 0600.
func TestDataDirIsOwnerOnly(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{FirstIP: 74, NoTLSFlags: true,
		Args: []string{"--snapshot-threshold", "5", "--snapshot-interval", "50ms"}})
	s := c.Servers[0]
	if err := os.MkdirAll(filepath.Join(s.DataDir, "old"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(s.DataDir, "notes.txt"), filepath.Join(s.DataDir, "old", "file")} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, 0o644)
	}
	os.Chmod(s.DataDir, 0o755)
	os.Chmod(filepath.Join(s.DataDir, "old"), 0o755)
	s.Start()
	c.WaitReady(30 * time.Second)
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		if _, err := alloc(ctx, s, "node1", fmt.Sprintf("d%d.example", i)); err != nil {
			t.Fatal(err)
		}
		if m, _ := filepath.Glob(filepath.Join(s.DataDir, "snapshots", "*", "state.bin")); len(m) > 0 && i >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no snapshot within 20s")
		}
	}
	var seen []string
	err := filepath.WalkDir(s.DataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // a temporary file the server just renamed
		}
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if info.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", path, info.Mode().Perm(), want)
		}
		rel, _ := filepath.Rel(s.DataDir, path)
		seen = append(seen, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("checked %s", strings.Join(seen, " "))
	for _, want := range []string{"server.json", "tls/ca-key.pem", "raft", "snapshots", "notes.txt", "old/file"} {
		if _, err := os.Stat(filepath.Join(s.DataDir, want)); err != nil {
			t.Errorf("%s: %v", want, err)
		}
	}
	s.Stop(10 * time.Second)
}

// waitPair waits until both servers are ready, agree on a leader and have
// both in their configuration.
func waitPair(t *testing.T, a, b *testcluster.Server) {
	t.Helper()
	var sa, sb wire.Status
	var errA, errB error
	paired := poll.Wait(30*time.Second, func() bool {
		sa, errA = a.Status()
		sb, errB = b.Status()
		return errA == nil && errB == nil && a.Ready() && b.Ready() && sa.LeaderID != "" && sa.LeaderID == sb.LeaderID &&
			len(sa.Servers) == 2 && len(sb.Servers) == 2
	})
	if !paired {
		t.Fatalf("%s and %s did not form a cluster of two: %+v %v / %+v %v", a.ID, b.ID, sa, errA, sb, errB)
	}
}

// TestSecondServerJoinsWithACertificateFromTheFirstsDataDir grows a cluster
// from a server started without flags: a second server given only --join is
// refused with what to do; given a certificate from `ippool tls issue
// --ca-dir FIRST-DATA-DIR` it joins over mutual TLS and both serve writes.
// The first server, restarted with --join, keeps its own CA.
func TestSecondServerJoinsWithACertificateFromTheFirstsDataDir(t *testing.T) {
	bin := testcluster.Binary(t)
	c1 := testcluster.New(t, 1, testcluster.Options{FirstIP: 75, NoTLSFlags: true})
	s1 := c1.Servers[0]
	s1.Start()
	c1.WaitReady(30 * time.Second)

	c2 := testcluster.New(t, 1, testcluster.Options{FirstIP: 76, NoTLSFlags: true})
	s2 := c2.Servers[0]
	s2.ID = "s2"
	for i, a := range s2.Args {
		if a == "--id" {
			s2.Args[i+1] = "s2"
		}
	}
	s2.Args = append(s2.Args, "--join", s1.ClusterAddr)
	s2.Start()
	if !s2.Wait(20 * time.Second) {
		t.Fatal("a server with --join and no TLS flags kept running")
	}
	if code := s2.ExitCode(); code == 0 {
		t.Fatal("a server with --join and no TLS flags exited 0")
	}
	for _, want := range []string{"ippool tls issue --ca-dir", "ippool tls init", "--tls-ca", "--tls-cert", "--tls-key", "--insecure"} {
		if !strings.Contains(s2.Log(), want) {
			t.Errorf("the refusal does not say %q:\n%s", want, s2.Log())
		}
	}

	out := filepath.Join(t.TempDir(), "s2-tls")
	mustCLI(t, bin, "tls", "issue", "--ca-dir", s1.DataDir, "--out", out)
	for p, want := range map[string]fs.FileMode{out: 0o700, filepath.Join(out, "key.pem"): 0o600} {
		if info, err := os.Stat(p); err != nil || info.Mode().Perm() != want {
			t.Fatalf("%s: %v %v, want mode %v", p, info, err, want)
		}
	}
	if _, _, code := cli(t, bin, "tls", "issue", "--ca-dir", s1.DataDir, "--out", out); code == 0 {
		t.Fatal("tls issue overwrote an existing certificate")
	}
	f := ca.ServerFiles(out)
	s2.Args = append(s2.Args, "--tls-ca", f.CA, "--tls-cert", f.Cert, "--tls-key", f.Key)
	s2.Start()
	waitPair(t, s1, s2)
	if _, err := os.Stat(filepath.Join(s2.DataDir, "tls")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the server given certificates made a CA of its own too (%v)", err)
	}
	ctx := context.Background()
	for i, s := range []*testcluster.Server{s1, s2} {
		ip, err := alloc(ctx, s, "node1", fmt.Sprintf("via-%s.example", s.ID))
		if err != nil {
			t.Fatalf("a write through %s: %v", s.ID, err)
		}
		// Read your writes (S4) on the other server.
		other := []*testcluster.Server{s2, s1}[i]
		if got, status, err := lookup(ctx, other, "node1", ip); err != nil || got != fmt.Sprintf("via-%s.example", s.ID) {
			t.Fatalf("%s: lookup of %s gave %q (%d, %v)", other.ID, ip, got, status, err)
		}
	}

	// The first server restarts with --join, as it would once the cluster
	// has grown: its data dir's CA is still what it uses.
	s1.Stop(10 * time.Second)
	s1.Args = append(s1.Args, "--join", s2.ClusterAddr)
	s1.Start()
	waitPair(t, s1, s2)
	if _, err := alloc(ctx, s1, "node1", "after-restart.example"); err != nil {
		t.Fatalf("a write after the first server's restart: %v", err)
	}
	for _, s := range []*testcluster.Server{s1, s2} {
		s.Stop(10 * time.Second)
	}
}
