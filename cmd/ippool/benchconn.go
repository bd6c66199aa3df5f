package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/ippool/ippool/wire"
)

// benchConn is one bench worker's keep-alive HTTP/1.1 connection. The load
// generator shares the machine's cores with the servers it measures, so it
// writes its requests by hand into a reused buffer instead of going through
// net/http's client (which costs about as much CPU per request as the
// server's whole read path). The requests are the ones the client package
// sends: the same endpoints, headers and bodies.
type benchConn struct {
	bases   []*url.URL // this worker's server first, then the others
	cur     int
	timeout time.Duration
	c       net.Conn
	br      *bufio.Reader
	req     []byte

	// tls is the CLI's HTTPS configuration (--ca-cert ...), nil for the
	// system's roots.
	tls *tls.Config
	// token is the CLI's --token, sent on every request.
	token string
}

func newBenchConn(addrs []string, first int, timeout time.Duration) (*benchConn, error) {
	b := &benchConn{timeout: timeout}
	for i := range addrs {
		a := addrs[(first+i)%len(addrs)]
		u, err := url.Parse(a)
		if err != nil || u.Host == "" {
			u, err = url.Parse("http://" + a)
		}
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("bad server address %q", a)
		}
		b.bases = append(b.bases, u)
	}
	return b, nil
}

func (b *benchConn) close() {
	if b.c != nil {
		b.c.Close()
		b.c = nil
	}
}

// dial connects to the current server, moving on through the others when
// one cannot be reached.
func (b *benchConn) dial() error {
	var err error
	for range b.bases {
		u := b.bases[b.cur]
		var c net.Conn
		c, err = net.DialTimeout("tcp", u.Host, b.timeout)
		if err == nil && u.Scheme == "https" {
			cfg := &tls.Config{}
			if b.tls != nil {
				cfg = b.tls.Clone()
			}
			cfg.ServerName = u.Hostname()
			tc := tls.Client(c, cfg)
			tc.SetDeadline(time.Now().Add(b.timeout))
			if err = tc.Handshake(); err != nil {
				c.Close()
			}
			c = tc
		}
		if err == nil {
			b.c, b.br = c, bufio.NewReaderSize(c, 4096)
			return nil
		}
		b.cur = (b.cur + 1) % len(b.bases)
	}
	return err
}

// benchAnswer is an API answer as the bench reads it: a mapping, or an
// error's code.
type benchAnswer struct {
	wire.Mapping
	wire.Error
}

// do sends one request and reads its answer. It returns the answer's error
// code ("" on 200); a failed exchange returns "unreachable" or "timeout",
// and the next request reconnects, to the next server if this one is gone.
func (b *benchConn) do(method, path string) (benchAnswer, string) {
	var ans benchAnswer
	for attempt := 0; ; attempt++ {
		if b.c == nil {
			if err := b.dial(); err != nil {
				return ans, netCode(err)
			}
		}
		b.req = append(b.req[:0], method...)
		b.req = append(b.req, ' ')
		b.req = append(b.req, path...)
		b.req = append(b.req, " HTTP/1.1\r\nHost: "...)
		b.req = append(b.req, b.bases[b.cur].Host...)
		b.req = append(b.req, "\r\nUser-Agent: ippool-bench\r\n"...)
		if b.token != "" {
			b.req = append(b.req, "Authorization: Bearer "...)
			b.req = append(b.req, b.token...)
			b.req = append(b.req, "\r\n"...)
		}
		b.req = append(b.req, "Content-Length: 0\r\n\r\n"...)
		b.c.SetDeadline(time.Now().Add(b.timeout))
		resp, err := b.exchange()
		if err != nil {
			b.close()
			// A kept-alive connection the server closed while idle fails
			// on first use; that is not an answer, so try once more.
			if attempt == 0 && errors.Is(err, io.EOF) {
				continue
			}
			b.cur = (b.cur + 1) % len(b.bases)
			return ans, netCode(err)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if err != nil {
			b.close()
			return ans, netCode(err)
		}
		if resp.Close {
			b.close()
		}
		if json.Unmarshal(body, &ans) != nil && resp.StatusCode == http.StatusOK {
			return ans, "bad_answer"
		}
		if resp.StatusCode != http.StatusOK {
			if ans.Code == "" {
				return ans, "http_" + strconv.Itoa(resp.StatusCode)
			}
			return ans, ans.Code
		}
		return ans, ""
	}
}

func (b *benchConn) exchange() (*http.Response, error) {
	if _, err := b.c.Write(b.req); err != nil {
		return nil, err
	}
	return http.ReadResponse(b.br, nil)
}

func netCode(err error) string {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "timeout"
	}
	return "unreachable"
}
