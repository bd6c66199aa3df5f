package cluster

import "time"

// Metrics receives the cluster's events; the server's metrics package
// implements it. It keeps Prometheus out of this package.
type Metrics interface {
	BadEntry()
	LeadershipChange(isLeader bool)
	Batch(ops int, forwarded bool, d time.Duration, err error)
	ReadIndex(d time.Duration, err error)
	Snapshot(d time.Duration)
}

type nopMetrics struct{}

func (nopMetrics) BadEntry()                             {}
func (nopMetrics) LeadershipChange(bool)                 {}
func (nopMetrics) Batch(int, bool, time.Duration, error) {}
func (nopMetrics) ReadIndex(time.Duration, error)        {}
func (nopMetrics) Snapshot(time.Duration)                {}
