package resolver

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMetrics: the defences' counters are exported under their names.
func TestMetrics(t *testing.T) {
	r, _ := newTest(t, nil)
	r.stats.unwanted.Add(3)
	r.stats.cleared.Add(1)
	r.stats.privateDropped.Add(2)
	reg := prometheus.NewRegistry()
	r.RegisterMetrics(reg)
	for name, want := range map[string]float64{
		"ippool_dns_upstream_unwanted_replies_total": 3,
		"ippool_dns_cache_cleared_total":             1,
		"ippool_dns_private_answers_dropped_total":   2,
	} {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, mf := range mfs {
			if mf.GetName() == name {
				found = true
				if got := mf.GetMetric()[0].GetCounter().GetValue(); got != want {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
			}
		}
		if !found {
			t.Errorf("%s not exported", name)
		}
	}
}
