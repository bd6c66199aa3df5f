package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/internal/snapshot"
	"github.com/ippool/ippool/pool"
)

func TestBackupHeaderRoundTrip(t *testing.T) {
	h := backupHeader{Index: 42, Term: 7, Server: "s1", Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	line := formatBackupHeader(h)
	if want := `ippool-backup {"index":42,"term":7,"server":"s1","time":"2025-01-02T03:04:05Z"}` + "\n"; string(line) != want {
		t.Fatalf("header = %q, want %q", line, want)
	}
	got, err := parseBackupHeader(line)
	if err != nil || *got != h {
		t.Fatalf("parse = %+v, %v", got, err)
	}
	r := bufio.NewReader(bytes.NewReader(append(line, "IPPOOLS1rest"...)))
	got, n, err := readBackupHeader(r)
	if err != nil || *got != h || n != len(line) {
		t.Fatalf("read = %+v, %d, %v", got, n, err)
	}
	if rest, _ := r.Peek(8); string(rest) != "IPPOOLS1" {
		t.Fatalf("header read past its line: %q", rest)
	}
}

func TestReadBackupHeaderRaw(t *testing.T) {
	h, n, err := readBackupHeader(bufio.NewReader(strings.NewReader("IPPOOLS1...")))
	if h != nil || n != 0 || err != nil {
		t.Fatalf("raw snapshot: %v, %d, %v", h, n, err)
	}
}

func TestParseBackupHeaderBad(t *testing.T) {
	for _, in := range []string{
		`ippool-backup`,
		`ippool-backup {"index":1`,
		`ippool-backup {"index":-1}`,
		`ippool-backup {"index":1,"bogus":2}`,
		`ippool-backup {"index":1} {}`,
		`ippool-backup {"time":"yesterday"}`,
		`IPPOOLS1`,
	} {
		if h, err := parseBackupHeader([]byte(in)); err == nil {
			t.Errorf("parseBackupHeader(%q) = %+v", in, h)
		}
	}
	long := "ippool-backup " + strings.Repeat(" ", 2*maxHeader) + "{}\nIPPOOLS1"
	if _, _, err := readBackupHeader(bufio.NewReader(strings.NewReader(long))); err == nil {
		t.Error("accepted a header longer than maxHeader")
	}
	if _, _, err := readBackupHeader(bufio.NewReader(strings.NewReader(`ippool-backup {"index":1}`))); err == nil {
		t.Error("accepted a header with no snapshot after it")
	}
}

func testSnapshot(t *testing.T) []byte {
	t.Helper()
	st := pool.NewState()
	cfg, err := pool.ParseConfig("100.64.0.0/24", "100.64.0.0", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	if _, err := st.SetConfig(cfg, now); err != nil {
		t.Fatal(err)
	}
	for _, cd := range [][2]string{{"a", "x.example"}, {"a", "y.example"}, {"b", "x.example"}} {
		if _, err := st.Allocate(cd[0], cd[1], now); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := st.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestInspect(t *testing.T) {
	raw := testSnapshot(t)
	sum := sha256.Sum256(raw)
	h := backupHeader{Index: 9, Term: 2, Server: "s1", Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	for name, file := range map[string][]byte{
		"backup": append(formatBackupHeader(h), raw...),
		"raw":    raw,
	} {
		res, err := inspect(bytes.NewReader(file))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if res.Clients != 2 || res.Mappings != 3 || res.Domains != 2 || res.PoolSize != 255 ||
			res.Pool != "100.64.0.0/24" || res.Exclude != "100.64.0.0" || res.Lifetime != "1h0m0s" ||
			res.Size != int64(len(raw)) || res.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: %+v", name, res)
		}
		if (name == "backup") != (res.Time != nil) || (name == "backup" && (res.Index != 9 || res.Server != "s1")) {
			t.Errorf("%s: header fields %+v", name, res)
		}
	}
}

func TestInspectRefusesCorruption(t *testing.T) {
	raw := testSnapshot(t)
	flipped := bytes.Clone(raw)
	flipped[len(flipped)-10] ^= 0x40
	for name, file := range map[string][]byte{
		"flipped":   flipped,
		"truncated": raw[:len(raw)-3],
		"trailing":  append(bytes.Clone(raw), 0),
		"not ours":  []byte("hello world"),
		"empty":     nil,
	} {
		if _, err := inspect(bytes.NewReader(file)); !errors.Is(err, pool.ErrBadSnapshot) {
			t.Errorf("%s: err = %v, want bad_snapshot", name, err)
		}
	}
}

func TestInspectCountsTokens(t *testing.T) {
	var tokens *acl.State
	_, root, err := acl.NewToken(acl.RoleAdmin, "root", time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if tokens, err = tokens.Apply(acl.Command{Op: acl.OpBootstrap, Token: &root}); err != nil {
		t.Fatal(err)
	}
	var section bytes.Buffer
	if err := snapshot.WriteSections(&section, tokens, nil); err != nil {
		t.Fatal(err)
	}
	res, err := inspect(bytes.NewReader(append(section.Bytes(), testSnapshot(t)...)))
	if err != nil {
		t.Fatal(err)
	}
	if res.Tokens == nil || *res.Tokens != 1 || res.Mappings != 3 {
		t.Fatalf("%+v", res)
	}
	if res, _ := inspect(bytes.NewReader(testSnapshot(t))); res.Tokens != nil {
		t.Fatalf("a snapshot without ACLs shows tokens: %+v", res)
	}
}

// FuzzReadBackupHeader: a backup file's first line is taken as the header
// only when it starts with the magic, is refused when it is malformed or
// too long, and a header read writes back as the same line.
func FuzzReadBackupHeader(f *testing.F) {
	good := formatBackupHeader(backupHeader{Index: 42, Term: 3, Server: "s1", Time: time.Date(2026, 11, 30, 1, 2, 3, 4, time.UTC)})
	f.Add(append(good, "IPPOOLS1..."...))
	f.Add([]byte("IPPOOLS1 a raw snapshot"))
	f.Add([]byte(backupMagic + `{"index":1,"bogus":2}` + "\n"))
	f.Add([]byte(backupMagic + `{"index":1} {}` + "\n"))
	f.Add([]byte(backupMagic + strings.Repeat(" ", 5000)))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, n, err := readBackupHeader(bufio.NewReaderSize(bytes.NewReader(data), 512))
		if err != nil {
			return
		}
		if h == nil {
			if n != 0 || bytes.HasPrefix(data, []byte(backupMagic)) {
				t.Fatalf("no header, length %d, in %q", n, data)
			}
			return
		}
		if n > len(data) || n > maxHeader || data[n-1] != '\n' {
			t.Fatalf("header of %d bytes in %d bytes of input", n, len(data))
		}
		line := formatBackupHeader(*h)
		h2, err := parseBackupHeader(line)
		if err != nil || !bytes.Equal(formatBackupHeader(*h2), line) {
			t.Fatalf("header %+v writes as %q, which reads as %+v, %v", *h, line, h2, err)
		}
	})
}
