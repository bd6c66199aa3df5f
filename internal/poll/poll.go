// Package poll waits for a condition the way tests should wait for state:
// by checking it until a deadline, never by sleeping a guessed time. It is a
// leaf, so that the tests of any package (cluster's included, which
// testcluster imports) can share it.
package poll

import (
	"testing"
	"time"
)

// interval is how often a condition is checked: short against the seconds
// tests allow, long enough not to busy a shared machine.
const interval = 10 * time.Millisecond

// Wait checks cond until it holds, and reports false if timeout passed
// first.
func Wait(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

// Until is Wait failing t, with what, when the condition did not come.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Wait(timeout, cond) {
		t.Fatalf("after %v: %s", timeout, what)
	}
}
