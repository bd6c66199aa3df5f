package service

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ippool/ippool/internal/fakenode"
)

var _ Node = (*fakenode.Node)(nil)

// newFakeService is a Service on a fakeNode with a clock the test moves.
func newFakeService(t *testing.T, poolText string, lifetime time.Duration) (*Service, *fakenode.Node, *Metrics, *atomic.Int64) {
	t.Helper()
	node := fakenode.New(t, poolText, lifetime)
	metrics := NewMetrics(prometheus.NewRegistry())
	var now atomic.Int64
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	svc := New(node, Options{Metrics: metrics, MarkFlush: time.Hour, Now: func() time.Time { return time.Unix(0, now.Load()) }})
	t.Cleanup(svc.Close)
	return svc, node, metrics, &now
}
