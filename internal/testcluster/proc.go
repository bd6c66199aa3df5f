package testcluster

import (
	"context"
	"os/exec"
	"runtime"
	"sync"
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

var (
	starterOnce sync.Once
	starts      chan func()
)

// StartProcess starts a process meant to outlive the call (a server), with
// SysProcAttr unless cmd has its own, from an OS thread kept for starting
// processes. The kernel's SIGKILL on Linux (Pdeathsig) comes when the
// thread that forked the process ends, not the whole test binary, and the
// Go runtime ends a thread when a goroutine locked to it exits still locked
// (netnsLab.in leaves one so when it cannot return to the test's
// namespace): a server forked from a thread that happens to end so would
// be killed under the running test. The starting thread never ends.
func StartProcess(cmd *exec.Cmd) error {
	starterOnce.Do(func() {
		starts = make(chan func())
		go func() {
			runtime.LockOSThread() // for good: the thread must outlive every process it starts
			for f := range starts {
				f()
			}
		}()
	})
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = SysProcAttr()
	}
	errc := make(chan error, 1)
	starts <- func() { errc <- cmd.Start() }
	return <-errc
}
