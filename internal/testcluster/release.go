package testcluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	releaseMu   sync.Mutex
	releaseBins = map[string]string{}
)

// BinaryAt builds ./cmd/ippool as it was at commit, from the repository's
// own history (a git worktree of that commit in a temporary directory), once
// per test process: the older release a rolling-upgrade test starts from.
// The history must hold the commit; a shallow clone that lacks it fails the
// test, saying so, rather than skip the upgrade check.
func BinaryAt(t testing.TB, commit string) string {
	t.Helper()
	releaseMu.Lock()
	defer releaseMu.Unlock()
	if bin, ok := releaseBins[commit]; ok {
		return bin
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	run := func(dir, name string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out)), nil
	}
	root, err := run(".", "git", "rev-parse", "--show-toplevel")
	if err != nil {
		t.Fatalf("finding the repository to build release %s from: %v", commit, err)
	}
	if _, err := run(root, "git", "cat-file", "-e", commit+"^{commit}"); err != nil {
		t.Fatalf("commit %s (the previous release) is not in this clone's history; a rolling-upgrade test builds it from there, so clone with the whole history (no --depth): %v", commit, err)
	}
	dir, err := os.MkdirTemp("", "ippool-release-")
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "src")
	if _, err := run(root, "git", "worktree", "add", "--detach", src, commit); err != nil {
		t.Fatal(err)
	}
	// The worktree's record goes with the directory; the binary stays for
	// the rest of the test process.
	defer run(root, "git", "worktree", "remove", "--force", src)
	bin := filepath.Join(dir, "ippool-"+commit[:min(len(commit), 12)])
	if _, err := run(src, "go", "build", "-o", bin, "./cmd/ippool"); err != nil {
		t.Fatalf("building release %s: %v", commit, err)
	}
	releaseBins[commit] = bin
	return bin
}

// SetBinary makes the server's next Start run bin: how a test upgrades or
// downgrades a stopped server on the same data dir.
func (s *Server) SetBinary(bin string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bin = bin
}
