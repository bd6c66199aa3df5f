// Package buildinfo says which ippool this binary is: its release version
// (a constant, so a build from a clean clone without VCS stamping still
// knows it), the commit and Go it was built with when the toolchain recorded
// them, and the log entry versions it reads and writes, which decide what a
// mixed-version cluster may write (docs/upgrading.md).
package buildinfo

import (
	"runtime/debug"
	"strconv"
	"strings"
	"sync"

	"github.com/ippool/ippool/pool"
)

// Version is this release's semantic version, bumped at each release (and
// recorded with its commit in CHANGELOG.md).
const Version = "0.4.0-dev"

// Info is what `ippool version` prints and /v1/cluster reports per server.
type Info struct {
	Version  string `json:"version"`
	Commit   string `json:"commit,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	// EntryVersions are the log entry versions this build reads, oldest
	// first, and EntryVersionWrites the one it writes when every server
	// reads it.
	EntryVersions      []int `json:"entry_versions"`
	EntryVersionWrites int   `json:"entry_version_writes"`
}

// Get returns this binary's Info, read once: /v1/cluster, /readyz and every
// metrics scrape ask for it.
func Get() Info { return get() }

var get = sync.OnceValue(read)

func read() Info {
	v := Info{Version: Version, Go: "unknown", EntryVersionWrites: pool.EntryVersion}
	for i := pool.OldestEntryVersion; i <= pool.EntryVersion; i++ {
		v.EntryVersions = append(v.EntryVersions, i)
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	v.Go = bi.GoVersion
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// String is the one line `ippool --version` prints.
func (v Info) String() string {
	var b strings.Builder
	b.WriteString("ippool " + v.Version)
	if v.Commit != "" {
		b.WriteString(" (commit " + v.Commit)
		if v.Modified {
			b.WriteString(", modified")
		}
		b.WriteString(")")
	}
	b.WriteString(" " + v.Go + ", log entry versions " + v.Reads() + ", writes " + strconv.Itoa(v.EntryVersionWrites))
	return b.String()
}

// Reads is EntryVersions as text: "1-3".
func (v Info) Reads() string {
	if len(v.EntryVersions) == 0 {
		return "unknown"
	}
	first, last := v.EntryVersions[0], v.EntryVersions[len(v.EntryVersions)-1]
	if first == last {
		return strconv.Itoa(first)
	}
	return strconv.Itoa(first) + "-" + strconv.Itoa(last)
}
