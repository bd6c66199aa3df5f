package httpapi

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http/httpguts"
)

// loopbackHost reports whether a request's Host (with or without a port)
// names this machine's loopback: localhost, a name under .localhost
// (RFC 6761: browsers answer those themselves, and nobody can register one),
// or a loopback address.
//
// A page on any web site can make a browser send requests to a server on
// loopback by rebinding its own name to 127.0.0.1; such a request still
// carries the page's name as its Host, which is how it is told apart.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.IsLoopback()
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	return host == "localhost" || strings.HasSuffix(host, ".localhost")
}

func badHost(host string) reply {
	return reply{status: http.StatusForbidden, body: errorBody("bad_host", fmt.Sprintf(
		"the Host %q is not a loopback name or address, and this server listens on loopback only (a request naming another host may come from a web page through DNS rebinding); to serve under other names, give a non-loopback --http-addr",
		strings.ToLower(host)))}
}

// loopbackHostsOnly refuses requests whose Host is not loopback before any
// handler runs, /healthz included: a rebinding page should learn nothing.
func loopbackHostsOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !loopbackHost(r.Host) {
			badHost(r.Host).write(w)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// malformedTarget says what is wrong with a request's target or Host, ""
// when nothing is. fasthttp takes two things net/http does not, and the
// fast path must not either: a Host with userinfo ("evil.example:7480@
// 127.0.0.1" would pass a check that reads only what follows the '@'), and
// a request target in absolute form ("GET http://evil.example/ HTTP/1.1",
// whose host replaces the Host header). Only a proxy is sent absolute
// targets; ippool is none, so its targets are paths.
func malformedTarget(ctx *fasthttp.RequestCtx) string {
	if host := ctx.Request.Header.Host(); !httpguts.ValidHostHeader(string(host)) {
		return fmt.Sprintf("malformed Host header %q", host)
	}
	if uri := ctx.Request.Header.RequestURI(); len(uri) == 0 || uri[0] != '/' {
		return fmt.Sprintf("the request target %q is not a path: this server is not a proxy, and takes origin-form targets only (RFC 9112, section 3.2.1)", uri)
	}
	return ""
}
