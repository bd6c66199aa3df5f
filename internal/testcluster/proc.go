package testcluster

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

// Command is exec.CommandContext for a program a test runs to completion
// (the CLI, dig, ip, a script): it is killed by its PID when timeout
// passes or the test ends, whichever comes first, and, on Linux, when this
// test binary dies without running its cleanups (a `go test -timeout`
// panic), through SysProcAttr. WaitDelay bounds how long Wait then waits
// for output pipes that a child of the program may still hold.
func Command(t testing.TB, timeout time.Duration, name string, args ...string) *exec.Cmd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = SysProcAttr()
	cmd.WaitDelay = 5 * time.Second
	return cmd
}
