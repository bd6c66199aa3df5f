package cluster

import "testing"

func TestSnapshotThresholdGrowsWithTheState(t *testing.T) {
	for _, tc := range []struct {
		mappings int
		want     uint64
	}{
		{0, 16384}, {1_000_000, 16384}, {4_194_304, 16384}, {10_000_000, 39062}, {30_000_000, 117187},
	} {
		if got := snapshotThresholdFor(16384, tc.mappings); got != tc.want {
			t.Errorf("%d mappings: %d entries between snapshots, want %d", tc.mappings, got, tc.want)
		}
	}
	if got := snapshotThresholdFor(200_000, 30_000_000); got != 200_000 {
		t.Errorf("a configured threshold above the state's: %d", got)
	}
}
