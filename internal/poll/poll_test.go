package poll

import (
	"testing"
	"time"
)

func TestWait(t *testing.T) {
	n := 0
	if !Wait(5*time.Second, func() bool { n++; return n == 3 }) || n != 3 {
		t.Fatalf("Wait returned before or after the condition held: %d checks", n)
	}
	if Wait(30*time.Millisecond, func() bool { return false }) {
		t.Fatal("Wait reported a condition that never held")
	}
}
