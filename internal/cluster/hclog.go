package cluster

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter routes the Raft library's hclog output into our slog logger,
// so an operator reads one log in one format at one level setting.
type hclogAdapter struct {
	l    *slog.Logger
	name string
	args []any
}

func newHCLog(l *slog.Logger, name string) hclog.Logger {
	return &hclogAdapter{l: l.With("component", name), name: name}
}

func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace, hclog.Debug:
		return slog.LevelDebug
	case hclog.Info:
		return slog.LevelInfo
	case hclog.Warn:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (h *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	for i, a := range args {
		// hclog.Fmt defers formatting to the logger; do it here.
		if f, ok := a.(hclog.Format); ok && len(f) > 0 {
			if format, ok := f[0].(string); ok {
				args[i] = fmt.Sprintf(format, f[1:]...)
			}
		}
	}
	h.l.Log(context.Background(), quieter(level, msg, args), msg, args...)
}

// quieter is the level a Raft message is logged at. Raft narrates every
// state change at INFO, which this package's own lines already say in
// operators' terms ("this server is the leader", "joined the cluster"), so
// its INFO is DEBUG here; and its warning that the heartbeat timeout passed
// with no leader ever known is how every new or restarted server starts its
// first election, not a fault, so it is DEBUG too. The same warning after a
// leader was known (a failover) stays a warning.
func quieter(level hclog.Level, msg string, args []any) slog.Level {
	if level == hclog.Info {
		return slog.LevelDebug
	}
	if level == hclog.Warn && msg == "heartbeat timeout reached, starting election" {
		for i := 0; i+1 < len(args); i += 2 {
			if k, _ := args[i].(string); k == "last-leader-addr" {
				if v := fmt.Sprint(args[i+1]); v == "" {
					return slog.LevelDebug
				}
			}
		}
	}
	return slogLevel(level)
}
func (h *hclogAdapter) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hclogAdapter) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hclogAdapter) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hclogAdapter) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hclogAdapter) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }
func (h *hclogAdapter) enabled(l slog.Level) bool {
	return h.l.Enabled(context.Background(), l)
}
func (h *hclogAdapter) IsTrace() bool        { return h.enabled(slog.LevelDebug) }
func (h *hclogAdapter) IsDebug() bool        { return h.enabled(slog.LevelDebug) }
func (h *hclogAdapter) IsInfo() bool         { return h.enabled(slog.LevelInfo) }
func (h *hclogAdapter) IsWarn() bool         { return h.enabled(slog.LevelWarn) }
func (h *hclogAdapter) IsError() bool        { return h.enabled(slog.LevelError) }
func (h *hclogAdapter) ImpliedArgs() []any   { return h.args }
func (h *hclogAdapter) Name() string         { return h.name }
func (h *hclogAdapter) SetLevel(hclog.Level) {}
func (h *hclogAdapter) GetLevel() hclog.Level {
	switch {
	case h.IsDebug():
		return hclog.Debug
	case h.IsInfo():
		return hclog.Info
	case h.IsWarn():
		return hclog.Warn
	}
	return hclog.Error
}
func (h *hclogAdapter) With(args ...any) hclog.Logger {
	return &hclogAdapter{l: h.l.With(args...), name: h.name, args: append(append([]any{}, h.args...), args...)}
}
func (h *hclogAdapter) Named(name string) hclog.Logger {
	return &hclogAdapter{l: h.l.With("sub", name), name: h.name + "." + name, args: h.args}
}
func (h *hclogAdapter) ResetNamed(name string) hclog.Logger {
	return &hclogAdapter{l: h.l, name: name, args: h.args}
}
func (h *hclogAdapter) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return slog.NewLogLogger(h.l.Handler(), slog.LevelInfo)
}
func (h *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return h.StandardLogger(nil).Writer()
}
