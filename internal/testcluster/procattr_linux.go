package testcluster

import "syscall"

// SysProcAttr is what every process a test starts runs with: its own
// process group, so that a signal sent to it reaches nothing else, and
// SIGKILL from the kernel when the thread that started it ends, so that a
// test binary that dies without running its cleanups (`go test -timeout`
// panics, a SIGKILL) leaves no server behind. Servers are started with
// StartProcess, from a thread that ends only with the test binary.
func SysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
