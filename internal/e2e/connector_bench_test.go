//go:build linux

package e2e

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/testcluster"
)

// BenchmarkConnector measures the connector against the kernel routing the
// same traffic, on the same namespaces and wires: a client namespace, a
// gateway namespace running `ippool serve --connector` (which also forwards
// IPv4, for the routed runs) and an upstream namespace with a sink and a
// short request/answer server. Measurements alternate between the two paths
// so that both see the same machine. Run it alone, once:
//
//	go test -run '^$' -bench Connector -benchtime 1x ./internal/e2e/
//
// It reports bulk upload throughput on both paths and their ratio, new
// connections per second with a 4-byte request and a 3-byte answer, and the
// p50 and p99 time from the start of the dial to the answer's first byte.
func BenchmarkConnector(b *testing.B) {
	lab := newLab(b)
	bin := testcluster.Binary(b)
	n := subnet()
	sub := func(format string, a ...any) string { return fmt.Sprintf(format, append([]any{n}, a...)...) }
	client, gw, up := lab.ns("client"), lab.ns("gw"), lab.ns("up")
	src, gwC, gwU, dst := sub("10.%d.1.2"), sub("10.%d.1.1"), sub("10.%d.2.1"), sub("10.%d.2.2")
	lab.link(client, gw, []string{src + "/24"}, []string{gwC + "/24"})
	lab.link(gw, up, []string{gwU + "/24"}, []string{dst + "/24"})
	lab.ip("-n", client, "route", "add", "default", "via", gwC)
	lab.ip("-n", up, "route", "add", "default", "via", gwU)
	if out, err := testcluster.Command(b, 30*time.Second, "ip", "netns", "exec", gw, "sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
		b.Fatalf("ip_forward: %v: %s", err, out)
	}
	lab.resolvConf(client, gwC)
	startUpstreamNet(lab, up, dst, map[string]string{"bench.test": dst}, nil, nil, 0)
	sink := lab.listen(up, dst+":9000")
	go serveSink(sink)
	answer := lab.listen(up, dst+":9001")
	go serveAnswer(answer)

	srv := lab.start("gateway", gw, bin, "serve", "--data-dir", filepath.Join(b.TempDir(), "data"),
		"--http-addr", "127.0.0.1:7480", "--cluster-addr", "127.0.0.1:7481",
		"--dns-addr", gwC+":53", "--dns-upstream", dst+":53", "--dns-domains", "test", "--dns-private-domains", "test",
		"--connector", "--connector-client-rate", "0", "--connector-client-flows", "4096", "--log-level", "info")
	waitPoolSet(b, gw, "198.18.0.0/15", srv)
	pa := dig(b, client, src, "A", "bench.test")

	paths := []struct{ name, addr string }{{"routed", dst}, {"connector", pa}}
	const rounds = 3
	type sample struct{ bps, cps, p50, p99 float64 }
	res := map[string][]sample{}
	b.ResetTimer()
	for r := 0; r < rounds; r++ {
		for _, p := range paths {
			var s sample
			s.bps = benchClient(b, lab, client, "bulk", src, p.addr+":9000")[0]
			m := benchClient(b, lab, client, "conns", src, p.addr+":9001")
			s.cps, s.p50, s.p99 = m[0], m[1], m[2]
			res[p.name] = append(res[p.name], s)
		}
	}
	b.StopTimer()
	avg := func(name string, f func(sample) float64) float64 {
		var t float64
		for _, s := range res[name] {
			t += f(s)
		}
		return t / float64(len(res[name]))
	}
	for _, p := range paths {
		var rows []string
		for _, s := range res[p.name] {
			rows = append(rows, fmt.Sprintf("%.0f MB/s %.0f conn/s p50 %.2fms p99 %.2fms", s.bps/1e6, s.cps, s.p50/1e3, s.p99/1e3))
		}
		b.Logf("%-9s rounds: %s", p.name, strings.Join(rows, " | "))
	}
	b.ReportMetric(avg("routed", func(s sample) float64 { return s.bps })/1e6, "routed-MB/s")
	b.ReportMetric(avg("connector", func(s sample) float64 { return s.bps })/1e6, "connector-MB/s")
	b.ReportMetric(100*avg("connector", func(s sample) float64 { return s.bps })/avg("routed", func(s sample) float64 { return s.bps }), "%-of-routed")
	b.ReportMetric(avg("routed", func(s sample) float64 { return s.cps }), "routed-conns/s")
	b.ReportMetric(avg("connector", func(s sample) float64 { return s.cps }), "connector-conns/s")
	b.ReportMetric(avg("routed", func(s sample) float64 { return s.p99 }), "routed-p99-µs")
	b.ReportMetric(avg("connector", func(s sample) float64 { return s.p99 }), "connector-p99-µs")
	b.ReportMetric(0, "ns/op")
}

// benchClient runs one measurement in a process of its own inside ns (this
// test binary again, as TestConnectorBenchClient): a whole process in the
// namespace needs no thread locked to it, which would make every blocking
// call a handoff between threads and measure the load generator instead.
func benchClient(b *testing.B, lab *netnsLab, ns, mode, src, addr string) []float64 {
	b.Helper()
	cmd := testcluster.Command(b, 2*time.Minute, "ip", "netns", "exec", ns, os.Args[0], "-test.run", "^TestConnectorBenchClient$")
	cmd.Env = append(os.Environ(), "IPPOOL_BENCH_CLIENT="+strings.Join([]string{mode, src, addr}, ","))
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("bench client %s %s: %v\n%s", mode, addr, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "RESULT "); ok {
			var v []float64
			for _, f := range strings.Fields(rest) {
				x, _ := strconv.ParseFloat(f, 64)
				v = append(v, x)
			}
			return v
		}
	}
	b.Fatalf("bench client %s %s printed no result:\n%s", mode, addr, out)
	return nil
}

// TestConnectorBenchClient is BenchmarkConnector's load generator; it runs
// only when the benchmark starts it.
func TestConnectorBenchClient(t *testing.T) {
	spec := os.Getenv("IPPOOL_BENCH_CLIENT")
	if spec == "" {
		t.Skip("run by BenchmarkConnector")
	}
	f := strings.Split(spec, ",")
	mode, src, addr := f[0], f[1], f[2]
	switch mode {
	case "bulk":
		bps, err := bulk(src, addr, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("RESULT %f\n", bps)
	case "conns":
		cps, lats, err := connRate(src, addr, 3*time.Second, 32)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(lats)
		fmt.Printf("RESULT %f %d %d\n", cps, lats[len(lats)/2].Microseconds(), lats[len(lats)*99/100].Microseconds())
	}
}

func serveSink(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 256<<10)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
			}
		}()
	}
}

// serveAnswer answers each connection's 4-byte request with 3 bytes and
// closes.
func serveAnswer(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err == nil {
				c.Write([]byte("ok\n"))
			}
		}()
	}
}

// bulk sends as much as it can for d and returns bytes per second.
func bulk(src, addr string, d time.Duration) (float64, error) {
	dl := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := dl.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	buf := make([]byte, 256<<10)
	var sent int64
	start := time.Now()
	c.SetWriteDeadline(start.Add(d))
	for {
		n, err := c.Write(buf)
		sent += int64(n)
		if err != nil {
			break
		}
	}
	return float64(sent) / time.Since(start).Seconds(), nil
}

// connRate runs workers that each connect, send a request, read the answer
// and close, for d; it returns connections per second and each one's time
// from the dial to the first byte of the answer.
func connRate(src, addr string, d time.Duration, workers int) (float64, []time.Duration, error) {
	var mu sync.Mutex
	var lats []time.Duration
	var failed atomic.Int64
	var firstErr atomic.Value
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			buf := make([]byte, 16)
			dl := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			for time.Now().Before(stop) {
				t0 := time.Now()
				c, err := dl.Dial("tcp", addr)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				c.Write([]byte("req\n"))
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err = c.Read(buf)
				if err == nil {
					mine = append(mine, time.Since(t0))
				} else {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				c.Close()
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := time.Since(start)
	if f := failed.Load(); f > int64(len(lats))/100 {
		return 0, nil, fmt.Errorf("%d of %d connections failed, first: %v", f, int64(len(lats))+f, firstErr.Load())
	}
	return float64(len(lats)) / el.Seconds(), lats, nil
}
