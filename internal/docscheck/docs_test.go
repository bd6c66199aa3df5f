// Package docscheck holds tests that keep the documents in docs/ true to
// the code.
package docscheck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// importsHeading is the heading in docs/design.md whose section holds the
// import table; the table is the first run of lines starting with '|' in it.
const importsHeading = "### Who imports whom"

// TestDesignImportTable checks that docs/design.md's "Who imports whom"
// table is what `go list` says each package of the module imports (its
// non-test files, for linux/amd64), and prints the table to paste when not.
func TestDesignImportTable(t *testing.T) {
	root := moduleRoot(t)
	want, err := importTable(root)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "design.md"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := docTable(string(doc))
	if err != nil {
		t.Fatalf("%v\nPut this table under that heading:\n\n%s", err, want)
	}
	if got == want {
		return
	}
	t.Errorf("docs/design.md's %q table disagrees with go list:\n%s\n"+
		"Replace the table in docs/design.md (section %q) with this one:\n\n%s",
		importsHeading, lineDiff(got, want), importsHeading, want)
}

// moduleRoot is the directory above the test's that holds go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

type listed struct {
	ImportPath string
	Imports    []string
	Module     *struct{ Path string }
	Error      *struct{ Err string }
}

// importTable runs go list on every package of the module at root and
// renders, for each, the module's packages it imports, as a markdown table
// with module-relative paths, sorted.
func importTable(root string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "list", "-e", "-json=ImportPath,Imports,Module,Error", "./...")
	cmd.Dir = root
	// The table is of the default build: no tags, one platform.
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOOS=linux", "GOARCH=amd64")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go list: %v\n%s", err, stderr.Bytes())
	}
	rows := map[string][]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listed
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return "", fmt.Errorf("go list output: %v", err)
		}
		if p.Error != nil {
			return "", fmt.Errorf("go list: %s: %s", p.ImportPath, p.Error.Err)
		}
		if p.Module == nil {
			return "", fmt.Errorf("go list: %s has no module", p.ImportPath)
		}
		mod := p.Module.Path
		var in []string
		for _, imp := range p.Imports {
			if rel, ok := relative(mod, imp); ok {
				in = append(in, rel)
			}
		}
		rel, _ := relative(mod, p.ImportPath)
		slices.Sort(in)
		rows[rel] = in
	}
	if len(rows) == 0 {
		return "", errors.New("go list found no packages")
	}
	var b strings.Builder
	b.WriteString("| package | imports |\n| --- | --- |\n")
	for _, pkg := range slices.Sorted(maps.Keys(rows)) {
		imports := "(none)"
		if len(rows[pkg]) > 0 {
			imports = "`" + strings.Join(rows[pkg], "`, `") + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s |\n", pkg, imports)
	}
	return b.String(), nil
}

// relative is path relative to the module mod ("." for the module's root
// package), and false for a path outside it.
func relative(mod, path string) (string, bool) {
	if path == mod {
		return ".", true
	}
	rel, ok := strings.CutPrefix(path, mod+"/")
	return rel, ok
}

// docTable is the first table after importsHeading, up to the next heading.
func docTable(doc string) (string, error) {
	_, section, ok := strings.Cut(doc, "\n"+importsHeading+"\n")
	if !ok {
		return "", fmt.Errorf("docs/design.md has no %q heading", importsHeading)
	}
	var b strings.Builder
	inTable := false
	for line := range strings.Lines(section) {
		if strings.HasPrefix(line, "#") {
			break
		}
		if strings.HasPrefix(line, "|") {
			inTable = true
			b.WriteString(strings.TrimRight(line, " \t\r\n") + "\n")
		} else if inTable {
			break
		}
	}
	if b.Len() == 0 {
		return "", fmt.Errorf("docs/design.md's %q section has no table", importsHeading)
	}
	return b.String(), nil
}

// lineDiff lists the lines only in got (-) and only in want (+).
func lineDiff(got, want string) string {
	g, w := strings.Split(strings.TrimSpace(got), "\n"), strings.Split(strings.TrimSpace(want), "\n")
	var b strings.Builder
	for _, l := range g {
		if !slices.Contains(w, l) {
			fmt.Fprintf(&b, "- %s  (in docs/design.md, not in go list)\n", l)
		}
	}
	for _, l := range w {
		if !slices.Contains(g, l) {
			fmt.Fprintf(&b, "+ %s  (in go list, not in docs/design.md)\n", l)
		}
	}
	if b.Len() == 0 {
		b.WriteString("(the same rows in another order or spacing)\n")
	}
	return b.String()
}
