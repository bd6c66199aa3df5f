// Package httpapi serves ippool's HTTP API (docs/design.md#architecture): JSON
// under /v1, Prometheus metrics, health and readiness. Handlers parse and
// validate, call the service, and render; they hold no logic of their own.
package httpapi

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ippool/ippool/internal/service"
	"github.com/ippool/ippool/wire"
)

// MaxBody bounds request bodies other than snapshot restores: the API's
// requests are small, and a huge body is either a mistake or an attack.
const MaxBody = 64 << 10

// Options are the handler's switches.
type Options struct {
	// Pprof serves Go's profiler under /debug/pprof/, as Consul's
	// enable_debug does; off by default because profiles reveal internals.
	Pprof bool
	// LoopbackHostsOnly refuses, with 403 bad_host, every request whose
	// Host is not a loopback name or address. Set it when the server
	// listens on loopback only: no legitimate client names it otherwise,
	// and a web page reaching it through DNS rebinding does.
	LoopbackHostsOnly bool
	// MaxRestoreBytes bounds a snapshot restore's body, which only an
	// admin may send; 0 is wire.DefaultMaxRestoreBytes. The body goes to a file
	// on the server's disk, not to memory.
	MaxRestoreBytes int64

	// NewServer's deadlines. HeaderTimeout bounds a new connection's TLS
	// handshake and request headers, and every later request's headers
	// from their first byte (default 10s); BodyTimeout bounds reading a
	// request's body and writing its answer (default 2m); IdleTimeout
	// closes a kept-alive connection that sends nothing (default 2m).
	HeaderTimeout, BodyTimeout, IdleTimeout time.Duration
}

// Defaults of Options, and of serve's flags that set them.
const (
	DefaultAddr          = "127.0.0.1:7480"
	DefaultHeaderTimeout = 10 * time.Second
	DefaultBodyTimeout   = 2 * time.Minute
	DefaultIdleTimeout   = 2 * time.Minute
)

func (o *Options) setDefaults() {
	if o.MaxRestoreBytes <= 0 {
		o.MaxRestoreBytes = wire.DefaultMaxRestoreBytes
	}
	if o.HeaderTimeout <= 0 {
		o.HeaderTimeout = DefaultHeaderTimeout
	}
	if o.BodyTimeout <= 0 {
		o.BodyTimeout = DefaultBodyTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
}

// Handler returns the API's handler on net/http. NewServer serves the same
// API, faster.
func Handler(svc *service.Service, gatherer prometheus.Gatherer, log *slog.Logger, opts Options) http.Handler {
	opts.setDefaults()
	return (&api{svc: svc, log: log, maxRestore: opts.MaxRestoreBytes}).handler(gatherer, opts)
}

func (a *api) handler(gatherer prometheus.Gatherer, opts Options) http.Handler {
	mux := http.NewServeMux()
	for _, rt := range a.routes(gatherer, opts) {
		mux.Handle(rt.pattern, a.guard(rt.role, rt.handler))
	}
	if opts.LoopbackHostsOnly {
		return loopbackHostsOnly(a.limitBody(mux))
	}
	return a.limitBody(mux)
}

type api struct {
	svc *service.Service
	log *slog.Logger
	// maxRestore is Options.MaxRestoreBytes.
	maxRestore int64
}
