package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/internal/policy"
	"github.com/ippool/ippool/internal/service"
)

// NewServer returns the server `ippool serve` runs: fasthttp in front, which
// answers the two requests that carry the load itself, allocation (POST
// /v1/clients/{client}/domains/{domain}) and lookup (GET
// /v1/clients/{client}/ips/{ip}), and hands every other request to
// Handler's net/http mux through fasthttpadaptor.
//
// Why two stacks: net/http costs more CPU per request than fasthttp
// (it starts a goroutine per request to watch the connection, allocates
// header maps, and resets deadlines), and a write's latency on a busy
// server is mostly waiting for a CPU; the figures are in docs/decisions.md ("HTTP
// front end"). The rest of the API is rare, so it keeps net/http's richer
// semantics; both stacks render answers with the same code (reply), and a
// test holds them to the same bytes.
//
// Limits match Handler's: bodies are refused past MaxBody (a snapshot
// restore, which only an admin may send, past Options.MaxRestoreBytes)
// with the same 413. fasthttp streams request bodies
// (StreamRequestBody), so none is held in memory before the handler sees
// it: takeBody reads an ordinary body up to MaxBody, and a restore's goes
// to a file (restoreFrom). A body whose declared length is over its limit
// is refused from its headers alone, at once. Options.LoopbackHostsOnly
// is checked before the fast path, and again by the mux for what it
// answers.
//
// For HTTPS, serve a tls.NewListener (TLS.Config): fasthttp reads and writes
// through it as through TCP, and lingerClose's half close becomes TLS's
// close_notify.
func NewServer(svc *service.Service, gatherer prometheus.Gatherer, log *slog.Logger, opts Options) *fasthttp.Server {
	opts.setDefaults()
	a := &api{svc: svc, log: log, maxRestore: opts.MaxRestoreBytes}
	rest := fasthttpadaptor.NewFastHTTPHandler(ownContext(a.handler(gatherer, opts)))
	return &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			defer func() {
				// net/http survives a handler's panic; so must this.
				if v := recover(); v != nil {
					log.Error("HTTP handler panicked", "panic", v, "stack", string(debug.Stack()))
					ctx.Response.Reset()
					writeFast(ctx, reply{status: http.StatusInternalServerError, body: errorBody("internal", "internal error")})
				}
			}()
			malformed := malformedTarget(ctx)
			hostOK := malformed == "" && (!opts.LoopbackHostsOnly || loopbackHost(string(ctx.Host())))
			// A restore to a refused Host has its body read as any other,
			// so that the 403 goes out through lingerClose.
			restore := hostOK && a.mayRestore(&ctx.Request.Header)
			if !a.takeBody(ctx, restore, opts.LoopbackHostsOnly) {
				return
			}
			if hostOK && a.serveFast(ctx) {
				return
			}
			if malformed != "" {
				writeFast(ctx, reply{status: http.StatusBadRequest, body: errorBody("bad_request", malformed)})
				return
			}
			// fasthttp takes request targets net/http refuses; answer
			// those as net/http would, not with the adaptor's 500.
			if _, err := url.ParseRequestURI(string(ctx.RequestURI())); err != nil {
				writeFast(ctx, reply{status: http.StatusBadRequest, body: errorBody("bad_request", "malformed request target: "+err.Error())})
				return
			}
			if !hostOK {
				writeFast(ctx, badHost(string(ctx.Host())))
				return
			}
			if restore {
				// Not through the adaptor, which reads a body into memory.
				var body io.Reader = bytes.NewReader(nil)
				if s := ctx.RequestBodyStream(); s != nil {
					body = s
				}
				if rep := a.restoreFrom(context.Background(), body); rep.status == http.StatusRequestEntityTooLarge {
					lingerClose(ctx, rep)
				} else {
					writeFast(ctx, rep)
				}
				return
			}
			rest(ctx)
		},
		HeaderReceived: func(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
			limit := MaxBody
			if a.mayRestore(h) {
				limit = int(min(a.maxRestore, math.MaxInt))
			} else {
				limit = a.ordinaryLimit(h)
			}
			h.Del(declaredLengthHeader)
			if n := h.ContentLength(); n > limit {
				// Refused whatever it holds (takeBody answers). With no
				// length left, fasthttp calls the handler at once
				// instead of first waiting for the body's first bytes.
				h.Set(declaredLengthHeader, strconv.Itoa(n))
				h.SetContentLength(0)
			}
			return fasthttp.RequestConfig{MaxRequestBodySize: limit, ReadTimeout: opts.BodyTimeout}
		},
		StreamRequestBody:  true,
		MaxRequestBodySize: MaxBody,
		ErrorHandler: func(ctx *fasthttp.RequestCtx, err error) {
			if errors.As(err, new(*fasthttp.ErrSmallBuffer)) {
				lingerClose(ctx, reply{status: http.StatusRequestHeaderFieldsTooLarge, body: errorBody("bad_request", fmt.Sprintf("the request line and headers exceed %d bytes", maxHeaderBytes))})
				return
			}
			writeFast(ctx, reply{status: http.StatusBadRequest, body: errorBody("bad_request", err.Error())})
		},
		ReadBufferSize: maxHeaderBytes,
		// fasthttp's ReadTimeout runs from a connection's start (TLS
		// handshake included) or a request's first byte to the end of its
		// headers; HeaderReceived gives the body its own.
		ReadTimeout:           opts.HeaderTimeout,
		WriteTimeout:          opts.BodyTimeout,
		IdleTimeout:           opts.IdleTimeout,
		NoDefaultServerHeader: true,
		CloseOnShutdown:       true,
		Logger:                fastLogger{log},
	}
}

// maxHeaderBytes bounds a request's line and headers.
const maxHeaderBytes = 16 << 10

// declaredLengthHeader carries, from HeaderReceived to takeBody, the
// Content-Length of a request refused for it; a client's own is dropped.
const declaredLengthHeader = "X-Ippool-Refused-Length"

// isRestore reports whether a request is a restore (PUT /v1/snapshot).
func isRestore(h *fasthttp.RequestHeader) bool {
	path, _, _ := bytes.Cut(h.RequestURI(), []byte("?"))
	return h.IsPut() && string(path) == "/v1/snapshot"
}

// mayRestore reports whether a request is a restore from an admin, the
// one request that may carry a large body.
func (a *api) mayRestore(h *fasthttp.RequestHeader) bool {
	return isRestore(h) && a.authorizeHeader(h, acl.RoleAdmin) == nil
}

// isPolicySet reports whether a request sets the policy (PUT /v1/policy).
func isPolicySet(h *fasthttp.RequestHeader) bool {
	path, _, _ := bytes.Cut(h.RequestURI(), []byte("?"))
	return h.IsPut() && string(path) == "/v1/policy"
}

// ordinaryLimit is the bound of a body read into memory: MaxBody, and a
// whole policy document for an admin's PUT /v1/policy (a thousand rules
// take more than MaxBody).
func (a *api) ordinaryLimit(h *fasthttp.RequestHeader) int {
	if isPolicySet(h) && a.authorizeHeader(h, acl.RoleAdmin) == nil {
		return policy.MaxBytes
	}
	return MaxBody
}

// takeBody enforces the body limits, which fasthttp leaves to the handler
// when it streams bodies, and reads an ordinary body (up to MaxBody) into
// the request for the fast path and the adaptor. A restore's body is left
// to stream. It reports false when it has answered the request.
func (a *api) takeBody(ctx *fasthttp.RequestCtx, restore, loopbackOnly bool) bool {
	h := &ctx.Request.Header
	if declared := h.Peek(declaredLengthHeader); declared != nil {
		n, _ := strconv.ParseInt(string(declared), 10, 64)
		lingerClose(ctx, a.refuseBody(h, restore, loopbackOnly, n))
		return false
	}
	if restore || !ctx.Request.IsBodyStream() || h.ContentLength() == 0 {
		return true
	}
	limit := a.ordinaryLimit(h)
	body, err := io.ReadAll(io.LimitReader(ctx.RequestBodyStream(), int64(limit)+1))
	switch {
	case err != nil:
		ctx.SetConnectionClose()
		writeFast(ctx, reply{status: http.StatusBadRequest, body: errorBody("bad_request", "reading the request body: "+err.Error())})
		return false
	case len(body) > limit:
		lingerClose(ctx, a.refuseBody(h, restore, loopbackOnly, -1))
		return false
	}
	ctx.Request.SetBodyRaw(body)
	return true
}

// refuseBody answers a request whose body is over its limit (declared:
// its Content-Length, -1 when chunked) as the mux would: a Host it
// refuses first, then a restore from a caller who may not restore, else
// 413.
func (a *api) refuseBody(h *fasthttp.RequestHeader, restore, loopbackOnly bool, declared int64) reply {
	limit := int64(MaxBody)
	switch {
	case loopbackOnly && !loopbackHost(string(h.Host())):
		return badHost(string(h.Host()))
	case restore:
		limit = a.maxRestore
	case isRestore(h), isPolicySet(h):
		if err := a.authorizeHeader(h, acl.RoleAdmin); err != nil {
			return a.errorReply(err)
		}
		limit = int64(a.ordinaryLimit(h))
	}
	return tooLarge(declared, limit)
}

// authorizeHeader checks a fasthttp request's bearer token.
func (a *api) authorizeHeader(h *fasthttp.RequestHeader, need acl.Role) error {
	_, err := a.svc.Authorize(bearerToken(string(h.Peek("Authorization"))), need)
	return err
}

var (
	clientsPrefix = []byte("/v1/clients/")
	domainsPart   = []byte("domains")
	ipsPart       = []byte("ips")
)

// ownContext gives each request of the mux a context of its own in place
// of the fasthttp.RequestCtx the adaptor makes its context. A RequestCtx is
// a context.Context, but fasthttp reuses it for the connection's next request
// once the handler returns, and contexts derived from it read it after
// that: net/http's client cancels a request's context from its read loop
// once the response body has ended, and a cancel looks its parent up again.
// The race detector caught those reads in the end-to-end tests
// (IPPOOL_TEST_RACE). The handlers' work has timeouts of its own; the
// context ends when the handler returns. The requests the fasthttp handler
// in NewServer answers itself run under context.Background() for the same
// reason.
func ownContext(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// serveFast answers an allocation or a lookup, and reports false for any
// other request. Not under ctx: see ownContext.
func (a *api) serveFast(ctx *fasthttp.RequestCtx) bool {
	route, client, arg := fastRoute(ctx.IsPost(), ctx.IsGet(), ctx.URI().PathOriginal())
	need := lookupRole
	if route == routeAlloc {
		need = allocRole
	}
	var t acl.Token
	if route != routeNone {
		var err error
		if t, err = a.svc.Authorize(bearerToken(string(ctx.Request.Header.Peek("Authorization"))), need); err != nil {
			writeFast(ctx, a.errorReply(err))
			return true
		}
	}
	switch route {
	case routeAlloc:
		writeFast(ctx, a.allocReply(a.fastCaller(ctx.RemoteIP(), t), client, arg))
	case routeLookup:
		writeFast(ctx, a.lookupReply(context.Background(), client, arg))
	default:
		return false
	}
	return true
}

const (
	routeNone = iota
	routeAlloc
	routeLookup
)

// fastRoute recognizes an allocation (POST /v1/clients/{client}/domains/
// {domain}) or a lookup (GET /v1/clients/{client}/ips/{ip}) in a raw path.
// It takes only paths net/http's mux would route there unchanged (no empty,
// "." or ".." segment and no escaped "/", after which the mux redirects to
// a cleaned path) and unescapes the wildcards as the mux does; FuzzFastRouteAgreesWithTheMux holds it to that.
func fastRoute(post, get bool, rawPath []byte) (route int, client, arg string) {
	if !post && !get {
		return routeNone, "", ""
	}
	path, ok := bytes.CutPrefix(rawPath, clientsPrefix)
	// net/http refuses a target with a control byte; fasthttp may not. A
	// raw "?" or "#" cannot reach here (fasthttp cuts them off), but would
	// start a query or a fragment.
	if !ok || bytes.ContainsFunc(path, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '?' || r == '#' }) {
		return routeNone, "", ""
	}
	segs := bytes.Split(path, []byte("/"))
	if len(segs) != 3 {
		return routeNone, "", ""
	}
	var vals [3]string
	for i, s := range segs {
		v, err := url.PathUnescape(string(s))
		if err != nil || v == "" || v == "." || v == ".." || strings.Contains(v, "/") {
			return routeNone, "", ""
		}
		vals[i] = v
	}
	switch {
	case post && bytes.Equal(segs[1], domainsPart):
		return routeAlloc, vals[0], vals[2]
	case get && bytes.Equal(segs[1], ipsPart):
		return routeLookup, vals[0], vals[2]
	}
	return routeNone, "", ""
}

// writeFast writes a reply as writeJSON does.
func writeFast(ctx *fasthttp.RequestCtx, rep reply) {
	b, err := json.Marshal(rep.body)
	if err != nil {
		rep = reply{status: http.StatusInternalServerError, body: errorBody("internal", "encoding the answer: "+err.Error())}
		b, _ = json.Marshal(rep.body)
	}
	if rep.retryAfter {
		ctx.Response.Header.Set("Retry-After", rep.retryAfterHeader())
	}
	if rep.status == http.StatusUnauthorized {
		ctx.Response.Header.Set("WWW-Authenticate", bearerChallenge)
	}
	ctx.SetContentType("application/json")
	ctx.SetStatusCode(rep.status)
	ctx.SetBody(append(b, '\n'))
}

// lingerClose answers a request refused before it was read whole as
// net/http does: the answer, a half close, then up to half a second of reading what
// the client still sends. Closing at once with its body unread would reset
// the connection, and the client would lose the answer.
func lingerClose(ctx *fasthttp.RequestCtx, rep reply) {
	c := ctx.Conn()
	writeFast(ctx, rep)
	ctx.SetConnectionClose()
	if _, err := ctx.Response.WriteTo(c); err != nil {
		return
	}
	// fasthttp writes the response again after this returns; the half
	// closed connection refuses it.
	ctx.Response.Reset()
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.Copy(io.Discard, c)
}

// fastLogger takes fasthttp's messages, which are about connections that
// clients broke or misused (net/http does not log those at all).
type fastLogger struct{ log *slog.Logger }

func (l fastLogger) Printf(format string, args ...any) {
	l.log.Debug("HTTP server: " + fmt.Sprintf(format, args...))
}
