package dnsfront

import (
	"context"
	"testing"
	"time"
)

func TestSharedDeadline(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	const d = time.Hour
	s := newSharedDeadline(parent, d)
	before := time.Now()
	ctx := s.get()
	after := time.Now()
	dl, ok := ctx.Deadline()
	if !ok || dl.Before(before.Add(d)) || dl.After(after.Add(d+d/16)) {
		t.Fatalf("deadline %v, want within [%v, %v]", dl, before.Add(d), after.Add(d+d/16))
	}
	if s.get() != ctx {
		t.Fatal("a second write within the window got another context")
	}
	// A window that has passed: the next write gets a context of its own.
	s.deadline = time.Now().Add(d - time.Second)
	if s.get() == ctx {
		t.Fatal("a write got a context that ends sooner than its timeout")
	}
	cancel()
	select {
	case <-s.get().Done():
	default:
		t.Fatal("the shared context outlived the server's")
	}
}
