package cluster

import (
	"log/slog"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// Raft's narration is DEBUG, and its first election warning with no leader
// ever known too; the same warning after a leader (a failover) and its
// errors keep their level.
func TestRaftLogLevels(t *testing.T) {
	const hb = "heartbeat timeout reached, starting election"
	for _, tc := range []struct {
		level hclog.Level
		msg   string
		args  []any
		want  slog.Level
	}{
		{hclog.Info, "entering leader state", nil, slog.LevelDebug},
		{hclog.Warn, hb, []any{"last-leader-addr", "", "last-leader-id", ""}, slog.LevelDebug},
		{hclog.Warn, hb, []any{"last-leader-addr", "127.0.0.1:7481", "last-leader-id", "s1"}, slog.LevelWarn},
		{hclog.Warn, "failed to contact", nil, slog.LevelWarn},
		{hclog.Error, "failed to appendEntries", nil, slog.LevelError},
	} {
		if got := quieter(tc.level, tc.msg, tc.args); got != tc.want {
			t.Errorf("%v %q %v: %v, want %v", tc.level, tc.msg, tc.args, got, tc.want)
		}
	}
}
