package faults

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcluster"
)

// Damaged files, and what a server must do when it starts on them.

// lastWAL returns the newest raft-wal segment file of s.
func lastWAL(s *testcluster.Server) (string, error) {
	files, err := filepath.Glob(filepath.Join(s.DataDir, "raft", "*.wal"))
	if err != nil || len(files) == 0 {
		return "", fmt.Errorf("%s: no WAL segment in %s/raft (%v)", s.ID, s.DataDir, err)
	}
	sort.Strings(files)
	return files[len(files)-1], nil
}

// CorruptWAL damages s's newest WAL segment while s is stopped, the way a
// crash in the middle of a write does: truncate cuts the file inside its last
// batch (the entries of the last fsync and the commit frame after them);
// otherwise bytes inside that batch are overwritten with garbage. raft-wal
// detects this by the batch's CRC and drops the batch, which Raft then
// fetches again. It checks only that last batch: damage to batches fsynced
// earlier is decay of the disk, not a torn write, and raft-wal does not
// detect it (docs/decisions.md, "Damaged log entries").
func (h *Harness) CorruptWAL(s *testcluster.Server, truncate bool) {
	path, err := lastWAL(s)
	if err != nil {
		h.T.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		h.T.Fatal(err)
	}
	start, end := lastWALBatch(b)
	if end <= start {
		h.T.Fatalf("%s holds no committed batch", path)
	}
	start = max(start, walFileHeader) // written once, at the segment's creation
	cut := start + h.Rng.IntN(end-start)
	if truncate {
		h.step("%s stopped; truncate %s from %d to %d bytes (last batch %d-%d)", s.ID, filepath.Base(path), len(b), cut, start, end)
		if err := os.Truncate(path, int64(cut)); err != nil {
			h.T.Fatal(err)
		}
		return
	}
	n := 1 + h.Rng.IntN(64)
	h.step("%s stopped; overwrite %d bytes at %d of %s (last batch %d-%d)", s.ID, n, cut, filepath.Base(path), start, end)
	for i := cut; i < min(cut+n, end); i++ {
		b[i] ^= byte(1 + h.Rng.IntN(255))
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		h.T.Fatal(err)
	}
}

// walFileHeader is the length of a raft-wal segment's header.
const walFileHeader = 32

// lastWALBatch returns where the last committed batch of a raft-wal segment
// lies: after the previous commit frame, up to and including the last one.
// Frames are an 8-byte header (type, 3 reserved bytes, little-endian length,
// or CRC for a commit frame) and, for entries and the index, a payload
// padded to 8 bytes; the file starts with a 32-byte header.
func lastWALBatch(b []byte) (start, end int) {
	const (
		frameHeader = 8
		frameEntry  = 1
		frameIndex  = 2
		frameCommit = 3
	)
	prevCommitEnd, lastCommitEnd := 0, 0
	for off := walFileHeader; off+frameHeader <= len(b); {
		switch b[off] {
		case frameEntry, frameIndex:
			n := int(binary.LittleEndian.Uint32(b[off+4 : off+8]))
			off += frameHeader + (n+7)&^7
		case frameCommit:
			prevCommitEnd, lastCommitEnd = lastCommitEnd, off+frameHeader
			off += frameHeader
		default:
			return prevCommitEnd, lastCommitEnd
		}
	}
	return prevCommitEnd, lastCommitEnd
}

// CorruptSnapshot damages s's newest snapshot (state.bin) while s is
// stopped. It reports false when s has no snapshot.
func (h *Harness) CorruptSnapshot(s *testcluster.Server, truncate bool) bool {
	dirs := snapshotFiles(s)
	if len(dirs) == 0 {
		return false
	}
	sort.Strings(dirs)
	path := dirs[len(dirs)-1]
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 2 {
		return false
	}
	if truncate {
		cut := h.Rng.IntN(len(b))
		h.step("%s stopped; truncate snapshot %s from %d to %d bytes", s.ID, rel(s, path), len(b), cut)
		os.Truncate(path, int64(cut))
		return true
	}
	at := h.Rng.IntN(len(b))
	h.step("%s stopped; flip a byte at %d of snapshot %s", s.ID, at, rel(s, path))
	b[at] ^= 0x5a
	os.WriteFile(path, b, 0o600)
	return true
}

func rel(s *testcluster.Server, path string) string {
	r, _ := filepath.Rel(s.DataDir, path)
	return r
}

// RestartDamaged starts s after its files were damaged and waits for one of
// the two acceptable outcomes: it serves and catches up, or it exits
// non-zero with an error in its log. It reports whether s is serving.
func (h *Harness) RestartDamaged(s *testcluster.Server) bool {
	h.Restart(s)
	exited, ready := false, false
	poll.Wait(20*time.Second, func() bool {
		exited = !s.Running()
		ready = !exited && s.Ready()
		return exited || ready
	})
	switch {
	case exited:
		code := s.ExitCode()
		log := s.Log()
		last := lastLines(log, 3)
		if code == 0 {
			h.fail("%s exited with status 0 after its files were damaged: %s", s.ID, last)
		} else if !strings.Contains(strings.ToLower(last), "error") && !strings.Contains(strings.ToLower(last), "fail") {
			h.fail("%s exited with status %d but no clear error: %s", s.ID, code, last)
		}
		h.broken[s] = last
		h.Logf("%s refused to start (status %d): %s", s.ID, code, last)
		return false
	case ready:
		h.Logf("%s recovered from damaged files and is ready", s.ID)
		return true
	}
	h.fail("%s neither served nor exited within 20s after its files were damaged", s.ID)
	return false
}

// RequireAllServing waits until every server is ready (but those that
// refused their damaged files earlier); a server that exits
// instead (a panic, a log it cannot open) is a violation, reported with the
// end of its output.
func (h *Harness) RequireAllServing(timeout time.Duration) {
	h.T.Helper()
	waiting := map[*testcluster.Server]bool{}
	for _, s := range h.C.Servers {
		if h.broken[s] == "" {
			waiting[s] = true
		}
	}
	poll.Wait(timeout, func() bool {
		for s := range waiting {
			switch {
			case !s.Running():
				h.fail("%s exited (status %d) instead of coming back: %s", s.ID, s.ExitCode(), exitReason(s.Log()))
				h.broken[s] = "exited at restart"
				delete(waiting, s)
			case s.Ready():
				delete(waiting, s)
			}
		}
		return len(waiting) == 0
	})
	for s := range waiting {
		h.fail("%s did not become ready within %v of its restart", s.ID, timeout)
	}
}

// exitReason picks the line that says why a process ended: a Go panic's
// message if it panicked (its stack trace is the rest of the output), else
// the last lines.
func exitReason(log string) string {
	if i := strings.LastIndex(log, "\npanic: "); i >= 0 {
		line, _, _ := strings.Cut(log[i+1:], "\n")
		return line
	}
	return lastLines(log, 3)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// ---- healing and checks ----

// snapshotFiles lists the state files of s's snapshots.
func snapshotFiles(s *testcluster.Server) []string {
	files, _ := filepath.Glob(filepath.Join(s.DataDir, "snapshots", "*", "state.bin"))
	return files
}

// WaitSnapshots waits until every server has taken a snapshot, or timeout
// has passed, and reports which.
func (h *Harness) WaitSnapshots(timeout time.Duration) bool {
	return poll.Wait(timeout, func() bool {
		for _, s := range h.C.Servers {
			if len(snapshotFiles(s)) == 0 {
				return false
			}
		}
		return true
	})
}
