//go:build unix && !linux

package testcluster

import "syscall"

// SysProcAttr is what every process a test starts runs with: its own
// process group. Only Linux can have the kernel kill it with the test
// binary; elsewhere the test's cleanup is all that stops it.
func SysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
