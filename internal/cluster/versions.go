package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/ippool/ippool/internal/buildinfo"
	"github.com/ippool/ippool/pool"
)

// A cluster writes log entries only in a version every server reads
// (docs/upgrading.md): each server says which versions it reads (Info,
// /v1/cluster), a server of a release before 0.3.0 says nothing and reads
// baselineEntryVersion, and a feature that needs a newer entry version is
// refused, with a retryable error naming the older servers, until every
// server reads it.

// newestRead is the newest entry version a server reads, given what it
// said (nothing: a release before 0.3.0).
func newestRead(reads []int) int {
	if len(reads) == 0 {
		return baselineEntryVersion
	}
	return slices.Max(reads)
}

// checkCanRead refuses a server that cannot read the entries a cluster
// writes: it would stop at the first one (or, before 0.3.0, skip it).
func checkCanRead(id string, reads []int, clusterWrites int, version string) error {
	if newestRead(reads) >= clusterWrites {
		return nil
	}
	if version == "" {
		version = "a release before 0.3.0"
	}
	return pool.Errorf(pool.CodeInvalidConfig, "server %s runs ippool %s, which reads log entry versions up to %d, but the cluster writes version %d: upgrade it to the cluster's release before it joins",
		id, version, newestRead(reads), clusterWrites)
}

// RequireEntryVersion returns nil when every server of the cluster reads
// log entry version v, as far as this server can learn now (it asks them,
// each within a second), and otherwise a feature_unavailable error (503,
// retryable) that names what needs it and every server that is older or
// did not answer. A feature that writes a new kind of entry calls it first.
func (n *Node) RequireEntryVersion(ctx context.Context, v int, what string) error {
	if v <= baselineEntryVersion {
		return nil
	}
	st := n.Status(ctx)
	var older []string
	for _, s := range st.Servers {
		switch {
		case !s.Reachable:
			older = append(older, s.ID+" (did not answer)")
		case newestRead(s.EntryVersions) < v:
			version := s.Version
			if version == "" {
				version = "before 0.3.0"
			}
			older = append(older, fmt.Sprintf("%s (%s, reads up to %d)", s.ID, version, newestRead(s.EntryVersions)))
		}
	}
	if len(st.Servers) == 0 {
		older = append(older, "the cluster's membership (not known to "+n.cfg.ID+")")
	}
	if len(older) == 0 {
		return nil
	}
	return pool.Errorf(pool.CodeFeatureUnavailable, "%s needs every server to read log entry version %d (ippool %s reads up to %d), and %s cannot yet: retry once every server is upgraded",
		what, v, buildinfo.Version, pool.EntryVersion, strings.Join(older, ", "))
}
