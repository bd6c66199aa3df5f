package main

// Backups. A backup file is one header line, then the raw snapshot exactly
// as GET /v1/snapshot sent it:
//
//	ippool-backup {"index":N,"term":N,"server":"id","time":"RFC3339"}\n
//	IPPOOLS1...
//
// The header says where in the log the state was taken, which the snapshot
// itself does not carry; the snapshot bytes stay untouched so that their
// checksums (and pool.ReadSnapshot) still vouch for them. Raw snapshots
// without a header are accepted too.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/ippool/ippool/internal/cluster"
	"github.com/ippool/ippool/internal/snapgen"
	"github.com/ippool/ippool/internal/snapshot"
	"github.com/ippool/ippool/pool"
)

const backupMagic = "ippool-backup "

// maxHeader bounds the header line, so a file that merely starts with the
// magic cannot make inspect read all of it looking for a newline.
const maxHeader = 4096

type backupHeader struct {
	Index  uint64    `json:"index"`
	Term   uint64    `json:"term"`
	Server string    `json:"server"`
	Time   time.Time `json:"time"`
}

// formatBackupHeader returns the header line, newline included.
func formatBackupHeader(h backupHeader) []byte {
	b, _ := json.Marshal(h)
	return append(append([]byte(backupMagic), b...), '\n')
}

// readBackupHeader consumes the header from r if there is one, and returns
// it with its length in bytes; nil and 0 for a raw snapshot.
func readBackupHeader(r *bufio.Reader) (*backupHeader, int, error) {
	peek, _ := r.Peek(len(backupMagic))
	if string(peek) != backupMagic {
		return nil, 0, nil
	}
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxHeader {
			return nil, 0, fmt.Errorf("backup header is longer than %d bytes", maxHeader)
		}
		if err == nil {
			break
		}
		if err != bufio.ErrBufferFull {
			return nil, 0, errors.New("backup header is not followed by a snapshot")
		}
	}
	h, err := parseBackupHeader(line)
	if err != nil {
		return nil, 0, err
	}
	return h, len(line), nil
}

// parseBackupHeader parses one header line, with or without its newline.
func parseBackupHeader(line []byte) (*backupHeader, error) {
	rest, ok := bytes.CutPrefix(line, []byte(backupMagic))
	if !ok {
		return nil, errors.New("not an ippool backup header")
	}
	rest = bytes.TrimSuffix(rest, []byte("\n"))
	var h backupHeader
	dec := json.NewDecoder(bytes.NewReader(rest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("backup header is malformed: %v", err)
	}
	if dec.More() {
		return nil, errors.New("backup header has trailing data")
	}
	return &h, nil
}

// SnapshotCmd groups the backup verbs.
type SnapshotCmd struct {
	Save     SnapshotSaveCmd     `cmd:"" help:"Save a consistent backup of the pool state to a file."`
	Restore  SnapshotRestoreCmd  `cmd:"" help:"Replace the whole cluster's pool state with a backup."`
	Inspect  SnapshotInspectCmd  `cmd:"" help:"Check a backup and summarize what it holds, offline."`
	Generate SnapshotGenerateCmd `cmd:"" help:"Write a snapshot of a large made-up state, for capacity planning and load tests."`
}

type SnapshotGenerateCmd struct {
	Clients           int           `required:"" help:"Clients in the state."`
	MappingsPerClient int           `required:"" name:"mappings-per-client" help:"Mappings each client holds."`
	DomainBytes       int           `name:"domain-bytes" default:"40" help:"Length of each domain name (12 to 253)."`
	Shared            float64       `default:"0.5" help:"Fraction of each client's names drawn from a set shared by all clients (as SaaS names are); the rest are the client's own."`
	SharedNames       int           `name:"shared-names" default:"10000" help:"Size of the shared set of names."`
	Pool              string        `default:"198.18.0.0/15" help:"The state's pool (serve's --pool)."`
	Exclude           string        `help:"Addresses the pool leaves out (serve's --exclude)."`
	Lifetime          time.Duration `default:"48h" help:"The pool's lifetime; last-used times lie within it before now, so nothing has expired when the snapshot is restored at once."`
	UsedWithin        time.Duration `name:"used-within" help:"Span before now that last-used times lie in (default: 90% of the lifetime); a short one makes a batch that goes idle at once."`
	Seed              uint64        `default:"1" help:"Makes the state reproducible."`
	Out               string        `required:"" type:"path" help:"File to write; replaced only once complete."`
}

func (c *SnapshotGenerateCmd) Help() string {
	return `Clients are named as DNS clients are (10.0.0.1, ...). The file is a raw snapshot, checksummed as a
backup is: restore it into a running cluster with 'ippool snapshot restore FILE' or seed a data dir
with --data-dir. 30M mappings take about a minute and a few GB of memory to make. Example:

    ippool snapshot generate --clients 100000 --mappings-per-client 100 --out 10m.snap
    ippool snapshot restore 10m.snap`
}

func (c *SnapshotGenerateCmd) Run() error {
	cfg, err := pool.ParseConfig(c.Pool, c.Exclude, c.Lifetime)
	if err != nil {
		return err
	}
	start := time.Now()
	st, err := snapgen.Generate(snapgen.Config{Pool: cfg, Clients: c.Clients, MappingsPerClient: c.MappingsPerClient,
		DomainBytes: c.DomainBytes, Shared: c.Shared, SharedNames: c.SharedNames, UsedWithin: c.UsedWithin, Seed: c.Seed})
	if err != nil {
		return err
	}
	made := time.Since(start)
	tmp := c.Out + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	err = snapshot.Write(w, snapshot.Contents{Pool: st})
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, c.Out)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	clients, mappings, domains := st.Counts()
	fi, _ := os.Stat(c.Out)
	_, err = fmt.Fprintf(stdout, "wrote %s: %d clients, %d mappings, %d domains, %d bytes (made in %v)\n", c.Out, clients, mappings, domains, fi.Size(), made.Round(time.Millisecond))
	return err
}

type SnapshotSaveCmd struct {
	File string `arg:"" help:"File to write; replaced only once the backup is complete."`
}

func (c *SnapshotSaveCmd) Help() string {
	return "Example:\n\n    ippool snapshot save ippool-$(date +%F).backup"
}

func (c *SnapshotSaveCmd) Run(cli *CLI) error {
	cl, ctx, cancel, err := cli.connect()
	if err != nil {
		return err
	}
	defer cancel()
	info, body, err := cl.OpenSnapshot(ctx)
	if err != nil {
		return err
	}
	defer body.Close()

	// A temporary file in the same directory, renamed over the target when
	// complete: an interrupted save never leaves a torn backup behind, nor
	// destroys the previous one.
	tmp, err := os.CreateTemp(filepath.Dir(c.File), "."+filepath.Base(c.File)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, fails harmlessly
	h := backupHeader{Index: info.Index, Term: info.Term, Server: info.Server, Time: time.Now().UTC().Truncate(time.Second)}
	w := bufio.NewWriterSize(tmp, 256<<10)
	header := formatBackupHeader(h)
	w.Write(header)
	n, err := io.Copy(w, body)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("saving the snapshot: %w", err)
	}
	if err := os.Rename(tmp.Name(), c.File); err != nil {
		return err
	}
	// The file's size, header included, as ls shows it.
	fmt.Fprintf(stdout, "saved %s: %d bytes, index %d, term %d, from %s\n", c.File, int64(len(header))+n, info.Index, info.Term, info.Server)
	return nil
}

type SnapshotRestoreCmd struct {
	File        string `arg:"" help:"Backup (or raw snapshot) to restore."`
	DataDir     string `help:"Seed this new, empty data dir offline instead of restoring a running cluster."`
	ID          string `help:"With --data-dir: the ID the seeded server will run with."`
	ClusterAddr string `help:"With --data-dir: the cluster address the seeded server will run with." default:"${cluster_addr}"`
}

func (c *SnapshotRestoreCmd) Help() string {
	return "Online (default): every server's state is replaced; mappings made since the backup are lost.\n" +
		"Offline (--data-dir): seeds a new data dir; start `ippool serve` on it with the same --id and\n" +
		"--cluster-addr, then join more servers to it. Examples:\n\n" +
		"    ippool snapshot restore ippool-2025-01-02.backup\n" +
		"    ippool snapshot restore --data-dir /var/lib/ippool --id s1 --cluster-addr 10.0.0.1:7481 ippool-2025-01-02.backup"
}

func (c *SnapshotRestoreCmd) Run(cli *CLI) error {
	f, err := os.Open(c.File)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	// Check the whole file first: a corrupt backup is refused here, with
	// the reason, before the cluster's state is touched.
	if _, err := inspect(io.NewSectionReader(f, 0, fi.Size())); err != nil {
		return fmt.Errorf("%s: %w", c.File, err)
	}
	// The state the check built is garbage now: give its memory back
	// before the upload, which takes a while (6 GB held through it at 30M
	// mappings, on a machine that may be a server's).
	debug.FreeOSMemory()
	h, off, err := readBackupHeader(bufio.NewReaderSize(io.NewSectionReader(f, 0, fi.Size()), maxHeader+16))
	if err != nil {
		return fmt.Errorf("%s: %w", c.File, err)
	}
	if c.DataDir != "" {
		if c.ID == "" {
			return fmt.Errorf("--data-dir needs --id, the server ID the seeded data dir will run with")
		}
		raw, err := io.ReadAll(io.NewSectionReader(f, int64(off), fi.Size()-int64(off)))
		if err != nil {
			return err
		}
		if err := cluster.SeedDataDir(c.DataDir, c.ID, c.ClusterAddr, raw); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "seeded %s from %s; start it with: ippool serve --data-dir %s --id %s --cluster-addr %s\n", c.DataDir, c.File, c.DataDir, c.ID, c.ClusterAddr)
		return nil
	}
	cl, ctx, cancel, err := cli.connect()
	if err != nil {
		return err
	}
	defer cancel()
	// A section of the file, not the file: it can be read again from its
	// start if the request has to go to another server.
	if err := cl.Restore(ctx, io.NewSectionReader(f, int64(off), fi.Size()-int64(off))); err != nil {
		return err
	}
	if h != nil {
		fmt.Fprintf(stdout, "restored %s (index %d, term %d, from %s at %s)\n", c.File, h.Index, h.Term, h.Server, h.Time.Format(time.RFC3339))
	} else {
		fmt.Fprintf(stdout, "restored %s\n", c.File)
	}
	return nil
}

type SnapshotInspectCmd struct {
	File string `arg:"" help:"Backup (or raw snapshot) to inspect."`
	JSON bool   `name:"json" help:"Print JSON."`
}

func (c *SnapshotInspectCmd) Help() string {
	return "Reads the whole file and checks every checksum; a corrupt file is an error. Example:\n\n    ippool snapshot inspect ippool-2025-01-02.backup"
}

type inspectResult struct {
	Server   string     `json:"server,omitempty"`
	Index    uint64     `json:"index,omitempty"`
	Term     uint64     `json:"term,omitempty"`
	Time     *time.Time `json:"time,omitempty"`
	Pool     string     `json:"pool,omitempty"`
	Exclude  string     `json:"exclude,omitempty"`
	Lifetime string     `json:"lifetime,omitempty"`
	PoolSize int        `json:"pool_size"`
	Clients  int        `json:"clients"`
	Mappings int        `json:"mappings"`
	Domains  int        `json:"domains"`
	// Tokens counts ACL tokens; nil when the snapshot has no ACL section.
	Tokens *int `json:"tokens,omitempty"`
	// PolicyRevision and PolicyRules: when the snapshot holds a policy.
	PolicyRevision uint64 `json:"policy_revision,omitempty"`
	PolicyRules    int    `json:"policy_rules,omitempty"`
	Size           int64  `json:"size_bytes"`
	SHA256         string `json:"sha256"`
}

func (c *SnapshotInspectCmd) Run(cli *CLI) error {
	f, err := os.Open(c.File)
	if err != nil {
		return err
	}
	defer f.Close()
	res, err := inspect(f)
	if err != nil {
		return fmt.Errorf("%s: %w", c.File, err)
	}
	if c.JSON {
		return printJSON(res)
	}
	tw := newTable(stdout)
	if res.Time != nil {
		tw.row("server", res.Server)
		tw.row("index", fmt.Sprint(res.Index))
		tw.row("term", fmt.Sprint(res.Term))
		tw.row("time", res.Time.Format(time.RFC3339))
	}
	if res.Pool == "" {
		tw.row("pool", "not configured")
	} else {
		tw.row("pool", fmt.Sprintf("%s (%d addresses per client)", res.Pool, res.PoolSize))
		if res.Exclude != "" {
			tw.row("exclude", res.Exclude)
		}
		tw.row("lifetime", res.Lifetime)
	}
	tw.row("clients", fmt.Sprint(res.Clients))
	tw.row("mappings", fmt.Sprint(res.Mappings))
	tw.row("domains", fmt.Sprint(res.Domains))
	if res.Tokens != nil {
		tw.row("tokens", fmt.Sprint(*res.Tokens))
	}
	if res.PolicyRevision != 0 {
		tw.row("policy", fmt.Sprintf("revision %d, %d rules", res.PolicyRevision, res.PolicyRules))
	}
	tw.row("size", fmt.Sprintf("%d bytes", res.Size))
	tw.row("sha256", res.SHA256)
	return tw.err
}

// inspect decodes a backup or raw snapshot. The size and SHA-256 are those
// of the raw snapshot bytes, so they match a snapshot taken by other means.
func inspect(r io.Reader) (*inspectResult, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	h, _, err := readBackupHeader(br)
	if err != nil {
		return nil, err
	}
	sum := sha256.New()
	cnt := &countWriter{}
	contents, err := snapshot.Read(io.TeeReader(br, io.MultiWriter(sum, cnt)))
	if err != nil {
		return nil, err
	}
	st, tokens := contents.Pool, contents.ACL
	res := &inspectResult{Size: cnt.n, SHA256: hex.EncodeToString(sum.Sum(nil)), PoolSize: st.PoolSize()}
	if h != nil {
		res.Server, res.Index, res.Term = h.Server, h.Index, h.Term
		t := h.Time
		res.Time = &t
	}
	if cfg, ok := st.Config(); ok {
		res.Pool, res.Exclude, res.Lifetime = cfg.PoolString(), cfg.ExcludeString(), cfg.Lifetime.String()
	}
	res.Clients, res.Mappings, res.Domains = st.Counts()
	if tokens.Bootstrapped() {
		n := len(tokens.Tokens())
		res.Tokens = &n
	}
	if p := contents.Policy; p != nil {
		res.PolicyRevision, res.PolicyRules = p.Revision, p.Policy.Len()
	}
	return res, nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// table prints "name  value" rows aligned, remembering the first error.
type table struct {
	w   io.Writer
	err error
}

func newTable(w io.Writer) *table { return &table{w: w} }

func (t *table) row(name, value string) {
	if t.err == nil {
		_, t.err = fmt.Fprintf(t.w, "%-10s%s\n", name, value)
	}
}
