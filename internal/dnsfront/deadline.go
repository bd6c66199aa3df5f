package dnsfront

import (
	"context"
	"sync"
	"time"
)

// sharedDeadline hands out contexts for writes that must end within d: one
// context serves every write begun in a window of d/16, and ends d plus up
// to d/16 after each of them began. A context per write cost a timer and a
// registration with the server's context, 4.5 of the 36 allocations of a new
// name and a timer-heap insert and delete each.
//
// A context it replaced is not cancelled, since writes still wait on it: its
// deadline ends it, and that releases what it holds as a cancel would.
type sharedDeadline struct {
	parent context.Context
	d      time.Duration

	mu       sync.Mutex
	ctx      context.Context
	cancel   context.CancelFunc // kept only until the deadline ends ctx
	deadline time.Time
}

func newSharedDeadline(parent context.Context, d time.Duration) *sharedDeadline {
	return &sharedDeadline{parent: parent, d: d}
}

// get returns a context that ends no sooner than d from now.
func (s *sharedDeadline) get() context.Context {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil || s.deadline.Before(now.Add(s.d)) {
		s.deadline = now.Add(s.d + s.d/16)
		s.ctx, s.cancel = context.WithDeadline(s.parent, s.deadline)
	}
	return s.ctx
}
