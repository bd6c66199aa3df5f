package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// restrictDataDir runs while other parts of the server write in the data
// dir (the tailnet's state, say, which replaces and removes its cache
// files): a file removed under the walk is skipped, not an error that
// stops the server. It once was (TestTailnetConnectorHA, "lstat
// .../netmap-cache/...: no such file or directory").
func TestRestrictDataDirSkipsFilesRemovedUnderIt(t *testing.T) {
	dir := t.TempDir()
	churn := filepath.Join(dir, "churn")
	if err := os.Mkdir(churn, 0o755); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := filepath.Join(churn, fmt.Sprint(i%64))
			os.WriteFile(p, nil, 0o644)
			os.Remove(p)
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	for range 300 {
		if err := restrictDataDir(dir); err != nil {
			t.Fatalf("with files coming and going: %v", err)
		}
	}
	info, err := os.Stat(churn)
	if err != nil || info.Mode().Perm() != 0o700 {
		t.Fatalf("the directory is %v (%v), want 0700", info.Mode().Perm(), err)
	}
}
