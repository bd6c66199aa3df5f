package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/ca"
	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcluster"
	"github.com/ippool/ippool/wire"
)

// The HTTP and cluster ports under abuse (issue 17): each attack held to
// a bound. Servers listen on
// 127.0.0.101 to 127.0.0.106; attackers connect from 127.0.0.2 to
// 127.0.0.4, and the tests read metrics from 127.0.0.9 so that the caps
// under test do not count them.

// abuseMaxPeak bounds a server's peak resident memory under each attack:
// a few times what it starts with, far below what the attacks announce.
const abuseMaxPeak = 200 << 20

// abuseDial opens a TCP connection to addr from the loopback address src
// and writes what, if anything.
func abuseDial(t *testing.T, src, addr string, what []byte) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if len(what) > 0 {
		if _, err := c.Write(what); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// abuseWaitClosed reads c until the server closes it or within has passed,
// and returns what it read and whether the server closed it.
func abuseWaitClosed(c net.Conn, within time.Duration) ([]byte, bool) {
	c.SetReadDeadline(time.Now().Add(within))
	b, err := io.ReadAll(io.LimitReader(c, 1<<20))
	var ne net.Error
	return b, !(errors.As(err, &ne) && ne.Timeout())
}

// abuseMetric reads one sample, named with its labels as /metrics writes
// it (`ippool_connections_open{port="http"}`), from 127.0.0.9.
func abuseMetric(t *testing.T, s *testcluster.Server, token, sample string) float64 {
	t.Helper()
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext:       (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}}).DialContext,
		DisableKeepAlives: true,
	}}
	req, _ := http.NewRequest("GET", s.URL()+"/metrics", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in %s's /metrics (%s)", sample, s.ID, resp.Status)
	return 0
}

// abusePeak returns the server's peak resident memory so far.
func abusePeak(t *testing.T, s *testcluster.Server) int64 {
	t.Helper()
	_, peak, err := s.Memory()
	if err != nil {
		t.Fatal(err)
	}
	return peak
}

// bootstrapACL turns access control on and returns the admin secret.
func bootstrapACL(t *testing.T, s *testcluster.Server) string {
	t.Helper()
	status, body := call(t, s, "", "POST", "/v1/acl/bootstrap", "")
	var root wire.Token
	if status != 200 || json.Unmarshal(body, &root) != nil || root.Secret == "" {
		t.Fatalf("bootstrap: %d %s", status, body)
	}
	return root.Secret
}

// A restore announcing 4 GiB and sending nothing, once and then twice at
// once, from an admin: the server's peak resident memory stays under
// abuseMaxPeak, and each connection
// is answered and closed once the body timeout passes.
func TestRestoreAnnouncingFourGiBHoldsNoMemory(t *testing.T) {
	s := testcluster.Start(t, 1, testcluster.Options{FirstIP: 101, Args: []string{"--http-body-timeout", "2s"}}).Servers[0]
	admin := bootstrapACL(t, s)
	head := fmt.Sprintf("PUT /v1/snapshot HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Length: 4294967295\r\n\r\n", s.HTTPAddr, admin)
	t.Logf("peak resident memory at start: %d MB", abusePeak(t, s)>>20)
	for _, n := range []int{1, 2} {
		conns := make([]net.Conn, n)
		for i := range conns {
			conns[i] = abuseDial(t, "127.0.0.2", s.HTTPAddr, []byte(head))
		}
		for i, c := range conns {
			got, closed := abuseWaitClosed(c, 30*time.Second)
			if !closed {
				t.Fatalf("%d at once, request %d: not closed within 30s of a 2s body timeout", n, i)
			}
			if len(got) > 0 && !strings.HasPrefix(string(got), "HTTP/1.1 4") {
				t.Errorf("%d at once, request %d answered %.80q, want a 4xx or a close", n, i, got)
			}
		}
		peak := abusePeak(t, s)
		t.Logf("peak resident memory after %d restore(s) announcing 4 GiB: %d MB", n, peak>>20)
		if peak > abuseMaxPeak {
			t.Fatalf("peak resident memory %d MB, over %d MB", peak>>20, abuseMaxPeak>>20)
		}
	}
	if !s.Ready() {
		t.Fatal("the server is not ready after the attack")
	}
}

// Connections that never finish their headers: past the cap per source
// (20) a source's next ones are refused at once, past the cap in all (26)
// anyone's, each refusal counted; those admitted are closed once the
// header timeout passes, not before (they were held 120s before, and none
// was refused).
func TestUnfinishedHeadersAreCappedAndTimedOut(t *testing.T) {
	const headerTimeout = 4 * time.Second
	s := testcluster.Start(t, 1, testcluster.Options{FirstIP: 102, Args: []string{
		"--http-max-conns", "26", "--http-max-conns-per-ip", "20", "--http-header-timeout", headerTimeout.String()}}).Servers[0]
	// Only the connections this test opens may count: the harness's kept
	// alive ones go, and the metrics requests ask the server to close.
	testcluster.CloseIdleConnections()
	poll.Until(t, 10*time.Second, "the server kept connections other than the metrics request open", func() bool {
		return abuseMetric(t, s, "", `ippool_connections_open{port="http"}`) == 1
	})
	partial := []byte("GET /healthz HTTP/1.1\r\nHost: " + s.HTTPAddr + "\r\n")
	type held struct {
		c      net.Conn
		opened time.Time
	}
	var admitted []held
	admit := func(src string) {
		admitted = append(admitted, held{abuseDial(t, src, s.HTTPAddr, partial), time.Now()})
	}
	refuse := func(src string) {
		t.Helper()
		start := time.Now()
		c := abuseDial(t, src, s.HTTPAddr, partial)
		if _, closed := abuseWaitClosed(c, headerTimeout/2); !closed {
			t.Fatalf("a connection from %s past its cap was still open after %v", src, time.Since(start))
		}
	}
	// The server accepts in order, so a refusal also says that every
	// connection opened before it was admitted; no request is sent
	// meanwhile, which would take a place.
	for range 20 {
		admit("127.0.0.2")
	}
	for range 10 {
		refuse("127.0.0.2")
	}
	for range 5 {
		admit("127.0.0.3")
	}
	for i, h := range admitted[20:] {
		if _, closed := abuseWaitClosed(h.c, 100*time.Millisecond); closed {
			t.Fatalf("connection %d from 127.0.0.3, within the caps, was closed", i)
		}
	}
	// The 26th place is free, unless the server has not yet closed the
	// last metrics request's connection: one or two connections from a
	// third source fill it, and the next is refused.
	refused := false
	for range 2 {
		c := abuseDial(t, "127.0.0.4", s.HTTPAddr, partial)
		opened := time.Now()
		if _, closed := abuseWaitClosed(c, 300*time.Millisecond); closed {
			refused = true
			break
		}
		admitted = append(admitted, held{c, opened})
	}
	if !refused {
		t.Fatal("no connection past the cap in all was refused")
	}
	for i, h := range admitted {
		if _, closed := abuseWaitClosed(h.c, headerTimeout+10*time.Second); !closed {
			t.Fatalf("admitted connection %d was still open %v after it opened", i, time.Since(h.opened))
		}
		if lived := time.Since(h.opened); lived < headerTimeout-time.Second {
			t.Fatalf("admitted connection %d was closed after %v, before the %v header timeout", i, lived, headerTimeout)
		}
	}
	if got := abuseMetric(t, s, "", `ippool_connections_refused_total{port="http",reason="per_source"}`); got != 10 {
		t.Errorf("refused per source: %v, want 10", got)
	}
	if got := abuseMetric(t, s, "", `ippool_connections_refused_total{port="http",reason="total"}`); got != 1 {
		t.Errorf("refused past the cap in all: %v, want 1", got)
	}
}

// The cluster port, with TLS as every testcluster runs it: past the cap
// per source (24) a source's next connection is closed at once; a
// connection that stops before TLS, after its protocol byte (each
// protocol) or inside the header of a 16 MiB frame is closed once the
// handshake deadline passes; and 20 connections announcing 16 MiB frames
// leave the server's peak resident memory under abuseMaxPeak.
func TestClusterPortStallsAreClosedAndCapped(t *testing.T) {
	const deadline = 3 * time.Second
	c := testcluster.Start(t, 1, testcluster.Options{FirstIP: 103, Args: []string{
		"--cluster-handshake-timeout", deadline.String(), "--cluster-max-conns-per-ip", "24"}})
	s := c.Servers[0]
	member, err := ca.ServerFiles(s.TLSDir).Load()
	if err != nil {
		t.Fatal(err)
	}
	member.InsecureSkipVerify = true // what is under test is the server

	// The cap per source, with connections still in their TLS handshake.
	var plain []net.Conn
	for range 24 {
		plain = append(plain, abuseDial(t, "127.0.0.2", s.ClusterAddr, nil))
	}
	poll.Until(t, 10*time.Second, "the server never held 24 cluster connections", func() bool {
		return abuseMetric(t, s, "", `ippool_connections_open{port="cluster"}`) >= 24
	})
	if _, closed := abuseWaitClosed(abuseDial(t, "127.0.0.2", s.ClusterAddr, nil), deadline/2); !closed {
		t.Fatal("a 25th cluster connection from one source was not closed at once")
	}
	if got := abuseMetric(t, s, "", `ippool_connections_refused_total{port="cluster",reason="per_source"}`); got != 1 {
		t.Errorf("cluster connections refused per source: %v, want 1", got)
	}

	// Stalls at every phase.
	dialTLS := func(src string, what []byte) net.Conn {
		t.Helper()
		raw := abuseDial(t, src, s.ClusterAddr, nil)
		tc := tls.Client(raw, member)
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			t.Fatalf("TLS handshake with a member's certificate: %v", err)
		}
		if _, err := tc.Write(what); err != nil {
			t.Fatal(err)
		}
		tc.SetDeadline(time.Time{})
		return tc
	}
	var frame [12]byte
	binary.BigEndian.PutUint32(frame[:4], 8+16<<20)
	stalls := map[string]net.Conn{}
	opened := time.Now()
	for i, p := range plain {
		stalls[fmt.Sprintf("plain TCP %d, nothing sent", i)] = p
	}
	for _, proto := range []byte{protoRaft, protoRPC, protoForward} {
		stalls[fmt.Sprintf("TLS, then %q", proto)] = dialTLS("127.0.0.3", []byte{proto})
	}
	stalls["TLS, then F and a 16 MiB frame header"] = dialTLS("127.0.0.3", append([]byte{protoForward}, frame[:]...))
	for name, conn := range stalls {
		if _, closed := abuseWaitClosed(conn, deadline+15*time.Second); !closed {
			t.Errorf("%s: still open %v after it opened", name, time.Since(opened))
		}
	}
	if lived := time.Since(opened); lived < deadline-time.Second {
		t.Errorf("the stalled connections were closed after %v, before the %v deadline", lived, deadline)
	}

	// Twenty frames announcing 16 MiB, all at once.
	var wg sync.WaitGroup
	for range 20 {
		conn := dialTLS("127.0.0.4", append([]byte{protoForward}, frame[:]...))
		conn.Write(make([]byte, 1024))
		wg.Add(1)
		go func() {
			defer wg.Done()
			abuseWaitClosed(conn, deadline+15*time.Second)
		}()
	}
	wg.Wait()
	peak := abusePeak(t, s)
	t.Logf("peak resident memory after 20 frames announcing 16 MiB: %d MB", peak>>20)
	if peak > abuseMaxPeak {
		t.Fatalf("peak resident memory %d MB, over %d MB", peak>>20, abuseMaxPeak>>20)
	}
	if _, err := alloc(context.Background(), s, "after", "abuse.example"); err != nil {
		t.Fatalf("a write after the attacks: %v", err)
	}
}

// A restore through a follower with ACLs on, by the CLI: the follower
// spools the backup to a file and streams it to the leader, which spools it,
// decodes it once and installs it; every server then answers from it.
// A restore over --max-restore-bytes is refused at once, and so is one
// from a caller who may not restore.
func TestStreamedRestoreThroughAFollowerWithACLs(t *testing.T) {
	const limit = 1 << 20
	bin := testcluster.Binary(t)
	c := testcluster.Start(t, 3, testcluster.Options{FirstIP: 104, Args: []string{"--max-restore-bytes", strconv.Itoa(limit)}})
	admin := bootstrapACL(t, c.Servers[0])
	c.SetToken(admin)
	leader := c.WaitReady(30 * time.Second)
	var follower *testcluster.Server
	for _, s := range c.Servers {
		if s != leader {
			follower = s
			break
		}
	}
	ctx := context.Background()
	want := map[string]string{}
	for i := range 50 {
		d := fmt.Sprintf("d%d.example", i)
		ip, err := alloc(ctx, follower, "gw", d)
		if err != nil {
			t.Fatal(err)
		}
		want[ip] = d
	}
	backup := filepath.Join(t.TempDir(), "backup.snap")
	mustCLI(t, bin, "--addr", follower.HTTPAddr, "--token", admin, "snapshot", "save", backup)
	mustCLI(t, bin, "--addr", follower.HTTPAddr, "--token", admin, "release", "gw")
	out := mustCLI(t, bin, "--addr", follower.HTTPAddr, "--token", admin, "snapshot", "restore", backup)
	if !strings.Contains(out, "restored") {
		t.Fatalf("restore printed %q", out)
	}
	for _, s := range c.Servers {
		for ip, d := range want {
			poll.Until(t, 10*time.Second, fmt.Sprintf("%s after the restore: %s does not map to %s", s.ID, ip, d), func() bool {
				got, _, err := lookup(ctx, s, "gw", ip)
				return err == nil && got == d
			})
		}
	}

	read := newToken(t, follower, admin, "read")
	pollStatus(t, follower, read.Secret, "GET", "/v1/acl/self", 200)
	for _, tc := range []struct {
		token, want string
	}{{admin, "HTTP/1.1 413"}, {read.Secret, "HTTP/1.1 403"}} {
		conn := abuseDial(t, "127.0.0.2", follower.HTTPAddr, []byte(fmt.Sprintf(
			"PUT /v1/snapshot HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", follower.HTTPAddr, tc.token, limit+1)))
		got, closed := abuseWaitClosed(conn, 5*time.Second)
		if !closed || !strings.HasPrefix(string(got), tc.want) {
			t.Errorf("a restore of %d bytes over a %d limit: %.120q (closed %v), want %s at once", limit+1, limit, got, closed, tc.want)
		}
	}
}
