package main

// The client verbs: each parses its arguments, makes one call through the
// client package and renders the answer, as text for people or, with
// --json, as the API's JSON for programs.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ippool/ippool/client"
	"github.com/ippool/ippool/internal/buildinfo"
	"github.com/ippool/ippool/internal/ca"
	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

// stdout is where results go; a variable so that tests can capture it.
var stdout io.Writer = os.Stdout

// stderr takes what a script capturing stdout must not get mixed in.
var stderr io.Writer = os.Stderr

func printJSON(v any) error {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// AllocCmd is `ippool alloc CLIENT DOMAIN`.
type AllocCmd struct {
	Client string `arg:"" help:"Client ID."`
	Domain string `arg:"" help:"Domain name."`
	JSON   bool   `name:"json" help:"Print the API's JSON instead of the address."`
}

func (c *AllocCmd) Help() string {
	return "Prints the address alone, so a script can capture it. Example:\n\n    ip=$(ippool alloc node1 example.com)"
}

func (c *AllocCmd) Run(cli *CLI) error {
	cl, ctx, cancel, err := cli.connect()
	if err != nil {
		return err
	}
	defer cancel()
	m, err := cl.Alloc(ctx, c.Client, c.Domain)
	if err != nil {
		return err
	}
	if c.JSON {
		return printJSON(m)
	}
	_, err = fmt.Fprintln(stdout, m.IP)
	return err
}

// LookupCmd is `ippool lookup CLIENT IP`.
type LookupCmd struct {
	Client string `arg:"" help:"Client ID."`
	IP     string `arg:"" help:"An address the client was given."`
	JSON   bool   `name:"json" help:"Print the API's JSON instead of the domain."`
}

func (c *LookupCmd) Help() string {
	return "Prints the domain alone; exits 2 when the address maps to nothing, 1 on other errors. Example:\n\n    ippool lookup node1 198.18.0.1"
}

func (c *LookupCmd) Run(cli *CLI) error {
	ip, err := netip.ParseAddr(c.IP)
	if err != nil {
		return fmt.Errorf("%q is not an IP address", c.IP)
	}
	cl, ctx, cancel, err := cli.connect()
	if err != nil {
		return err
	}
	defer cancel()
	m, err := cl.Lookup(ctx, c.Client, ip)
	if errors.Is(err, pool.ErrNotFound) {
		return &exitError{status: 2, err: err}
	}
	if err != nil {
		return err
	}
	if c.JSON {
		return printJSON(m)
	}
	_, err = fmt.Fprintln(stdout, m.Domain)
	return err
}

// ReleaseCmd is `ippool release CLIENT [DOMAIN]`.
type ReleaseCmd struct {
	Client string `arg:"" help:"Client ID."`
	Domain string `arg:"" optional:"" help:"Domain to release; without it, every mapping of the client."`
	JSON   bool   `name:"json" help:"Print the API's JSON."`
}

func (c *ReleaseCmd) Help() string {
	return "Examples:\n\n    ippool release node1 example.com    # one mapping\n    ippool release node1                # all of node1's mappings"
}

func (c *ReleaseCmd) Run(cli *CLI) error {
	cl, ctx, cancel, err := cli.connect()
	if err != nil {
		return err
	}
	defer cancel()
	if c.Domain == "" {
		n, err := cl.ReleaseClient(ctx, c.Client)
		if err != nil {
			return err
		}
		if c.JSON {
			return printJSON(wire.ReleaseClient{Client: c.Client, Released: n})
		}
		_, err = fmt.Fprintf(stdout, "released %d mapping%s of %s\n", n, plural(n), c.Client)
		return err
	}
	ok, err := cl.Release(ctx, c.Client, c.Domain)
	if err != nil {
		return err
	}
	if c.JSON {
		return printJSON(wire.Release{Client: c.Client, Domain: c.Domain, Released: ok})
	}
	if ok {
		_, err = fmt.Fprintf(stdout, "released %s of %s\n", c.Domain, c.Client)
	} else {
		_, err = fmt.Fprintf(stdout, "%s had no mapping for %s\n", c.Client, c.Domain)
	}
	return err
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// ListCmd is `ippool list CLIENT`.
type ListCmd struct {
	Client     string `arg:"" help:"Client ID."`
	Consistent bool   `help:"Confirm with the leader first, so the list has every allocation already answered anywhere."`
	JSON       bool   `name:"json" help:"Print the API's JSON."`
}

func (c *ListCmd) Help() string {
	return "Example:\n\n    ippool list node1 --consistent"
}

func (c *ListCmd) Run(cli *CLI) error {
	cl, ctx, cancel, err := cli.connect()
	if err != nil {
		return err
	}
	defer cancel()
	ms, err := cl.List(ctx, c.Client, c.Consistent)
	if err != nil {
		return err
	}
	if c.JSON {
		// The API's list names the client once, not in every entry.
		out := wire.List{Client: c.Client, Mappings: make([]wire.Mapping, len(ms))}
		for i, m := range ms {
			m.Client = ""
			out.Mappings[i] = m
		}
		return printJSON(out)
	}
	if len(ms) == 0 {
		fmt.Fprintf(os.Stderr, "%s has no mappings\n", c.Client)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DOMAIN\tIP\tLAST USED")
	now := time.Now()
	for _, m := range ms {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", m.Domain, m.IP, ago(m.LastUsed, now))
	}
	return tw.Flush()
}

// ago renders a time with how long ago it was, which is what an operator
// checking for expiry wants to know.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return fmt.Sprintf("%s (%s ago)", t.Local().Format(time.DateTime), d)
}

// ClusterCmd groups the membership verbs.
type ClusterCmd struct {
	Status ClusterStatusCmd `cmd:"" help:"Show the servers, their roles and how far each has applied the log."`
	Remove ClusterRemoveCmd `cmd:"" help:"Remove a server from the cluster."`
}

type ClusterStatusCmd struct {
	JSON bool `name:"json" help:"Print the API's JSON."`
}

func (c *ClusterStatusCmd) Help() string {
	return "Example:\n\n    ippool --addr 10.0.0.1:7480 cluster status"
}

func (c *ClusterStatusCmd) Run(cli *CLI) error {
	cl, ctx, cancel, err := cli.connect()
	if err != nil {
		return err
	}
	defer cancel()
	st, err := cl.Cluster(ctx)
	if err != nil {
		return err
	}
	if c.JSON {
		return printJSON(st)
	}
	return writeStatus(stdout, st)
}

func writeStatus(w io.Writer, st wire.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "server\t%s (%s), %s, term %d\n", st.ID, st.Addr, st.State, st.Term)
	leader := "none"
	if st.LeaderID != "" {
		leader = fmt.Sprintf("%s (%s)", st.LeaderID, st.LeaderAddr)
	}
	fmt.Fprintf(tw, "leader\t%s\n", leader)
	fmt.Fprintf(tw, "log\tcommit %d, applied %d, last %d\n", st.Commit, st.Applied, st.LastIndex)
	if st.Version != "" {
		fmt.Fprintf(tw, "version\t%s, reads log entry versions %s", st.Version, entryVersionsText(st.EntryVersions))
		if st.ClusterEntryVersion != 0 {
			fmt.Fprintf(tw, "; every server reads %d", st.ClusterEntryVersion)
		}
		fmt.Fprintln(tw)
	}
	if st.Pool != "" {
		fmt.Fprintf(tw, "pool\t%s\n", st.Pool)
	}
	if u, l := st.Usage, st.Limits; u != nil && l != nil {
		quotas := "enforced"
		if !st.QuotasEnforced {
			quotas = "mapping quotas not enforced: " + st.QuotasReason
		}
		fmt.Fprintf(tw, "quotas\t%s\n", quotas)
		fmt.Fprintf(tw, "usage\tclients %s, mappings %s (%s a client), domain bytes %s\n",
			ofLimit(int64(u.Clients), int64(l.MaxClients)), ofLimit(int64(u.Mappings), int64(l.MaxMappings)),
			ofLimit(-1, int64(l.MaxMappingsPerClient)), ofLimit(u.DomainBytes, l.MaxDomainBytes))
	}
	for _, a := range st.Alarms {
		fmt.Fprintf(tw, "alarm\t%s\n", a.Message)
	}
	if st.CertificateExpires != "" {
		left := ""
		if at, err := time.Parse(time.RFC3339, st.CertificateExpires); err == nil {
			left = fmt.Sprintf(" (in %d days)", int(time.Until(at).Hours()/24))
		}
		fmt.Fprintf(tw, "certificate\texpires %s%s\n", st.CertificateExpires, left)
	}
	if st.StaleBound != "" {
		fmt.Fprintf(tw, "local reads\t%s (answers from local state while current, within %s)\n", yesNo(st.LocalReads), st.StaleBound)
		fmt.Fprintf(tw, "reuse hold\t%s (%d addresses held now)\n", st.ReuseHold, st.HeldAddresses)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Servers) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS\tROLE\tVOTER\tREACHABLE\tTERM\tAPPLIED\tVERSION\tREADS\tERROR")
	for _, s := range st.Servers {
		version, reads := s.Version, entryVersionsText(s.EntryVersions)
		switch {
		case !s.Reachable:
			version, reads = "?", "?"
			if s.UnreachableSince != "" {
				if at, err := time.Parse(time.RFC3339, s.UnreachableSince); err == nil {
					s.Error = fmt.Sprintf("unreachable for %s (since %s); %s", time.Since(at).Round(time.Second), s.UnreachableSince, s.Error)
				}
			}
		case version == "":
			version, reads = "before 0.3.0", "1-3"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", s.ID, s.Addr, s.Role, yesNo(s.Voter), yesNo(s.Reachable), s.Term, s.Applied, version, reads, s.Error)
	}
	return tw.Flush()
}

// ofLimit is a usage against its bound (0: none); a usage of -1 is the
// bound alone.
func ofLimit(n, limit int64) string {
	switch {
	case n < 0 && limit == 0:
		return "no bound"
	case n < 0:
		return "at most " + strconv.FormatInt(limit, 10)
	case limit == 0:
		return strconv.FormatInt(n, 10) + " (no bound)"
	}
	return strconv.FormatInt(n, 10) + " of " + strconv.FormatInt(limit, 10)
}

// entryVersionsText is a list of log entry versions as a range: "1-3".
func entryVersionsText(vs []int) string {
	return buildinfo.Info{EntryVersions: vs}.Reads()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

type ClusterRemoveCmd struct {
	ID string `arg:"" help:"ID of the server to remove."`
}

func (c *ClusterRemoveCmd) Help() string {
	return "Removes a dead or retired server so it no longer counts toward the quorum. Example:\n\n    ippool cluster remove s3"
}

func (c *ClusterRemoveCmd) Run(cli *CLI) error {
	cl, ctx, cancel, err := cli.connect()
	if err != nil {
		return err
	}
	defer cancel()
	if err := cl.RemoveServer(ctx, c.ID); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "removed %s\n", c.ID)
	return err
}

// PoolCmd groups the pool configuration verbs.
type PoolCmd struct {
	Show PoolShowCmd `cmd:"" help:"Show the pool configuration."`
	Set  PoolSetCmd  `cmd:"" help:"Change the pool configuration; mappings outside the new pool are released."`
}

type PoolShowCmd struct {
	JSON bool `name:"json" help:"Print the API's JSON."`
}

func (c *PoolShowCmd) Help() string { return "Example:\n\n    ippool pool show" }

func (c *PoolShowCmd) Run(cli *CLI) error {
	cl, ctx, cancel, err := cli.connect()
	if err != nil {
		return err
	}
	defer cancel()
	p, err := cl.Pool(ctx)
	if err != nil {
		return err
	}
	if c.JSON {
		return printJSON(p)
	}
	return writePool(stdout, p)
}

func writePool(w io.Writer, p client.PoolInfo) error {
	exclude := p.Exclude
	if exclude == "" {
		exclude = "-"
	}
	_, err := fmt.Fprintf(w, "pool         %s\nexclude      %s\nlifetime     %s\n", p.Pool, exclude, p.Lifetime)
	if err == nil && p.ReuseHold != "" {
		// Q and B of docs/design.md, "Consistency".
		_, err = fmt.Fprintf(w, "reuse hold   %s (an address that stopped meaning a domain goes to another domain of the same client no sooner)\nstale bound  %s (this server answers from local state only while it knew the leader's commit index this recently)\n", p.ReuseHold, p.StaleBound)
	}
	return err
}

// PoolSetCmd changes only what is given: the other settings are read from
// the cluster first, so `pool set --lifetime 24h` keeps the addresses.
//
// Its flags are never read from the environment (env:"-"): serve's
// IPPOOL_POOL, set for the servers, must not turn into a change of the
// cluster's pool that the command line did not ask for.
type PoolSetCmd struct {
	Pool     *string        `help:"Addresses to hand out: comma-separated IPv4 prefixes, FIRST-LAST ranges or addresses." env:"-"`
	Exclude  *string        `help:"Addresses never handed out, same syntax; empty for none." env:"-"`
	Lifetime *time.Duration `help:"How long a mapping may sit unused before its address may be reused." env:"-"`
	DryRun   bool           `name:"dry-run" help:"Say what the change would release, and change nothing." env:"-"`
	Yes      bool           `help:"Make a change that releases mappings (without it, such a change is refused, saying how many)." env:"-"`
	JSON     bool           `name:"json" help:"Print the API's JSON."`
}

func (c *PoolSetCmd) Help() string {
	return "A change that would release mappings (the addresses of every mapping outside the new pool) is\n" +
		"refused unless --yes is given, with the count; --dry-run only shows it. Example:\n\n" +
		"    ippool pool set --pool 100.64.0.0/16 --dry-run\n" +
		"    ippool pool set --pool 100.64.0.0/16 --exclude 100.64.0.0-100.64.0.9 --lifetime 24h --yes"
}

func (c *PoolSetCmd) Run(cli *CLI) error {
	if c.Pool == nil && c.Exclude == nil && c.Lifetime == nil {
		return errors.New("nothing to change: give --pool, --exclude or --lifetime")
	}
	if c.Lifetime != nil && *c.Lifetime <= 0 {
		return fmt.Errorf("--lifetime %v is not positive", *c.Lifetime)
	}
	cl, ctx, cancel, err := cli.connect()
	if err != nil {
		return err
	}
	defer cancel()
	p, err := cl.Pool(ctx)
	if err != nil {
		return err
	}
	if c.Pool != nil {
		p.Pool = *c.Pool
	}
	if c.Exclude != nil {
		p.Exclude = *c.Exclude
	}
	if c.Lifetime != nil {
		p.Lifetime = *c.Lifetime
	}
	if c.DryRun || !c.Yes {
		n, clients, err := cl.PoolChangeReleases(ctx, p)
		if err != nil {
			return err
		}
		if c.DryRun {
			if c.JSON {
				p.Released, p.ReleasedClients, p.DryRun = &n, &clients, true
				return printJSON(p)
			}
			if err := writePool(stdout, p); err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "would release  %d mapping%s of %d client%s outside the new pool (dry run: nothing changed)\n", n, plural(n), clients, plural(clients))
			return err
		}
		if n > 0 {
			return fmt.Errorf("this change would release %d mapping%s of %d client%s (their addresses are outside the new pool, and their clients would get new ones): give --yes to make it, or --dry-run to see it without", n, plural(n), clients, plural(clients))
		}
	}
	n, err := cl.SetPool(ctx, p)
	if err != nil {
		return err
	}
	if c.JSON {
		p.Released = &n
		return printJSON(p)
	}
	if err := writePool(stdout, p); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "released  %d mapping%s outside the new pool\n", n, plural(n))
	return err
}

// TLSCmd groups the certificate verbs.
type TLSCmd struct {
	Init  TLSInitCmd  `cmd:"" help:"Create a cluster CA and server certificates."`
	Issue TLSIssueCmd `cmd:"" help:"Issue a server certificate from an existing cluster CA, such as the one a first server made in its data dir."`
}

type TLSInitCmd struct {
	Dir      string        `help:"Directory to write the CA and certificates into." default:"./ippool-tls"`
	Servers  int           `help:"Number of server certificates." default:"3"`
	ValidFor time.Duration `help:"How long the certificates are valid." default:"8760h"`
	Days     int           `help:"How many days the certificates are valid, instead of --valid-for."`
	DNSName  []string      `name:"dns-name" help:"Host names the server certificates also carry, so they can serve HTTPS on the API too (servers check each other by the name server.ippool alone)." sep:","`
	IP       []string      `name:"ip" help:"IP addresses the server certificates also carry." sep:","`
}

func (c *TLSInitCmd) Help() string {
	return `Writes DIR/ca/ca.pem and DIR/ca/ca-key.pem, the CA: keep it offline, it is needed only to issue
more certificates (ippool tls issue --ca-dir DIR/ca). And one directory per server,
DIR/server-N/{ca.pem,cert.pem,key.pem}: copy the whole server-N directory to server N.
Existing files are never overwritten. Example:

    ippool tls init --dir ippool-tls --servers 3
    scp -r ippool-tls/server-1 10.0.0.1:/etc/ippool/tls
    ippool serve --tls-ca /etc/ippool/tls/ca.pem --tls-cert /etc/ippool/tls/cert.pem --tls-key /etc/ippool/tls/key.pem ...`
}

func (c *TLSInitCmd) Run(cli *CLI) error {
	if c.Servers < 1 || c.Servers > 1000 {
		return fmt.Errorf("--servers %d is not between 1 and 1000", c.Servers)
	}
	if c.ValidFor <= 0 {
		return fmt.Errorf("--valid-for %v is not positive", c.ValidFor)
	}
	validFor, extra, err := certOptions(c.ValidFor, c.Days, c.DNSName, c.IP)
	if err != nil {
		return err
	}
	files, err := ca.Init(c.Dir, c.Servers, validFor, extra...)
	for _, f := range files {
		fmt.Fprintln(stdout, f)
	}
	return err
}

type TLSIssueCmd struct {
	CADir    string        `name:"ca-dir" required:"" help:"The CA: a directory holding ca.pem and ca-key.pem (tls init's DIR/ca), or the data dir of a server that made its own CA."`
	Out      string        `required:"" help:"Directory to write ca.pem, cert.pem and key.pem into; copy it to the new server."`
	ValidFor time.Duration `help:"How long the certificate is valid (at most as long as the CA)." default:"8760h"`
	Days     int           `help:"How many days the certificate is valid, instead of --valid-for."`
	DNSName  []string      `name:"dns-name" help:"Host names the certificate also carries, so it can serve HTTPS on the API too." sep:","`
	IP       []string      `name:"ip" help:"IP addresses the certificate also carries." sep:","`
}

func (c *TLSIssueCmd) Help() string {
	return `A server started alone without TLS flags makes its own cluster CA in DATA-DIR/tls. To add a
server, issue it a certificate from there (on the first server, which may keep running), copy the
output directory to the new server and start it with the TLS flags. Existing files are never
overwritten. Example:

    ippool tls issue --ca-dir /var/lib/ippool --out s2-tls
    scp -r s2-tls 10.0.0.2:/etc/ippool/tls
    ippool serve --id s2 --cluster-addr 10.0.0.2:7481 --join 10.0.0.1:7481 \
        --tls-ca /etc/ippool/tls/ca.pem --tls-cert /etc/ippool/tls/cert.pem --tls-key /etc/ippool/tls/key.pem`
}

func (c *TLSIssueCmd) Run(cli *CLI) error {
	if c.ValidFor <= 0 {
		return fmt.Errorf("--valid-for %v is not positive", c.ValidFor)
	}
	validFor, extra, err := certOptions(c.ValidFor, c.Days, c.DNSName, c.IP)
	if err != nil {
		return err
	}
	files, err := ca.Issue(c.CADir, c.Out, validFor, extra...)
	for _, f := range files {
		fmt.Fprintln(stdout, f)
	}
	return err
}

// VersionCmd prints what the binary was built from, for bug reports.
type VersionCmd struct {
	JSON bool `name:"json" help:"Print JSON."`
}

func (c *VersionCmd) Help() string { return "Example:\n\n    ippool version" }

func (c *VersionCmd) Run(cli *CLI) error {
	v := buildinfo.Get()
	if c.JSON {
		return printJSON(v)
	}
	_, err := fmt.Fprintln(stdout, v.String())
	return err
}

// certOptions checks tls init's and tls issue's --days, --dns-name and
// --ip: --days, when given, replaces --valid-for.
func certOptions(validFor time.Duration, days int, dnsNames, ips []string) (time.Duration, []string, error) {
	if days < 0 {
		return 0, nil, fmt.Errorf("--days %d is not positive", days)
	}
	if days > 0 {
		validFor = time.Duration(days) * 24 * time.Hour
	}
	var extra []string
	for _, n := range dnsNames {
		n = strings.TrimSpace(n)
		if _, err := pool.NormalizeDomain(strings.TrimPrefix(n, "*.")); err != nil || n == "" {
			return 0, nil, fmt.Errorf("--dns-name %q is not a host name", n)
		}
		extra = append(extra, n)
	}
	for _, a := range ips {
		if _, err := netip.ParseAddr(strings.TrimSpace(a)); err != nil {
			return 0, nil, fmt.Errorf("--ip %q is not an IP address", a)
		}
		extra = append(extra, strings.TrimSpace(a))
	}
	return validFor, extra, nil
}
