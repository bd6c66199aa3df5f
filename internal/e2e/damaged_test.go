package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcluster"
)

// TestDamagedDataDirRefusesToStartWithAClearError starts a server on a data
// dir whose log or snapshots were damaged while it was stopped. It must exit
// with status 1 and an error that names the damaged file and says what to
// do, never with a Go panic, and /readyz must never answer 200 meanwhile.
func TestDamagedDataDirRefusesToStartWithAClearError(t *testing.T) {
	cases := []struct {
		name string
		args []string
		// damage breaks the stopped server's data dir and returns the path
		// the error must name.
		damage func(t *testing.T, dataDir string) string
	}{
		{name: "log entry that panics the decoder", damage: func(t *testing.T, dataDir string) string {
			// The first entry's payload starts with its index as a varint;
			// ten 0xff bytes overflow it, and raft-wal's decoder panics
			// on that (raft would panic on any unreadable entry anyway).
			seg := firstSegment(t, dataDir)
			b, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			const segHeader, frameHeader = 32, 8
			if b[segHeader] != 1 { // 1: an entry frame
				t.Fatalf("%s does not start with an entry frame (type %d)", seg, b[segHeader])
			}
			n := binary.LittleEndian.Uint32(b[segHeader+4:])
			if n < 10 {
				t.Fatalf("first entry is only %d bytes", n)
			}
			for i := range 10 {
				b[segHeader+frameHeader+i] = 0xff
			}
			if err := os.WriteFile(seg, b, 0o600); err != nil {
				t.Fatal(err)
			}
			return seg
		}},
		{name: "log metadata overwritten", damage: func(t *testing.T, dataDir string) string {
			meta := filepath.Join(dataDir, "raft", "wal-meta.db")
			if _, err := os.Stat(meta); err != nil {
				t.Fatalf("no metadata file: %v", err)
			}
			if err := os.WriteFile(meta, []byte(strings.Repeat("not a bolt database\n", 400)), 0o600); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(dataDir, "raft")
		}},
		{name: "every snapshot damaged", args: []string{"--snapshot-threshold", "16", "--snapshot-interval", "100ms"},
			damage: func(t *testing.T, dataDir string) string {
				states, _ := filepath.Glob(filepath.Join(dataDir, "snapshots", "*", "state.bin"))
				if len(states) == 0 {
					t.Fatal("no snapshot was taken")
				}
				for _, f := range states {
					if err := os.WriteFile(f, []byte("garbage, not a snapshot"), 0o600); err != nil {
						t.Fatal(err)
					}
				}
				return filepath.Join(dataDir, "snapshots")
			}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := testcluster.Start(t, 1, testcluster.Options{FirstIP: 53 + i, Args: tc.args})
			s := c.Servers[0]
			ctx := context.Background()
			for j := range 40 {
				if _, err := alloc(ctx, s, "gw", fmt.Sprintf("d%d.example", j)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.args != nil { // wait for a snapshot
				poll.Until(t, 20*time.Second, "no snapshot", func() bool {
					m, _ := filepath.Glob(filepath.Join(s.DataDir, "snapshots", "*", "state.bin"))
					return len(m) > 0
				})
			}
			s.Stop(10 * time.Second)
			before := len(s.Log())
			named := tc.damage(t, s.DataDir)

			s.Start()
			poll.Until(t, 30*time.Second, "the server with a damaged data dir neither exited nor served", func() bool {
				if s.Ready() {
					t.Fatal("/readyz answered 200 on a server with a damaged data dir")
				}
				return !s.Running()
			})
			out := s.Log()[before:]
			t.Logf("output of the refused start:\n%s", out)
			if code := s.ExitCode(); code != 1 {
				t.Errorf("exit status %d, want 1", code)
			}
			for _, bad := range []string{"panic:", "goroutine "} {
				if strings.Contains(out, bad) {
					t.Errorf("output contains %q:\n%s", bad, out)
				}
			}
			for _, want := range []string{"ippool: ", "cannot be read", named, "move " + s.DataDir + " aside", "ippool snapshot restore"} {
				if !strings.Contains(out, want) {
					t.Errorf("error does not say %q:\n%s", want, out)
				}
			}
		})
	}
}

// firstSegment returns the raft-wal segment file that holds the oldest entries.
func firstSegment(t *testing.T, dataDir string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dataDir, "raft", "*.wal"))
	if len(files) == 0 {
		t.Fatalf("no WAL segment in %s/raft", dataDir)
	}
	sort.Strings(files)
	return files[0]
}
