package main

// The policy verbs: get, set and test, against the live policy the
// servers hold (docs/policy.md).

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/ippool/ippool/internal/policy"
	"github.com/ippool/ippool/wire"
)

// PolicyCmd groups the policy verbs.
type PolicyCmd struct {
	Get   PolicyGetCmd   `cmd:"" help:"Print the policy as it was set, comments and all."`
	Set   PolicySetCmd   `cmd:"" help:"Replace the policy with a HuJSON document (needs an admin token)."`
	Test  PolicyTestCmd  `cmd:"" help:"Say which rule decides a client's request and what it decides."`
	Check PolicyCheckCmd `cmd:"" help:"Check a policy document offline, without a server."`
}

type PolicyGetCmd struct {
	JSON bool `name:"json" help:"Print the API's JSON (text, revision, rules)."`
}

func (c *PolicyGetCmd) Run(cli *CLI) error {
	cl, ctx, cancel, err := cli.connect()
	if err != nil {
		return err
	}
	defer cancel()
	p, err := cl.Policy(ctx)
	if err != nil {
		return err
	}
	if c.JSON {
		return printJSON(p)
	}
	if p.Revision == 0 {
		_, err := fmt.Fprintln(stderr, "no policy is set: every client may reach every domain in --dns-domains")
		return err
	}
	fmt.Fprintf(stderr, "revision %d, %d rules\n", p.Revision, p.Rules)
	_, err = io.WriteString(stdout, p.Text)
	if err == nil && !strings.HasSuffix(p.Text, "\n") {
		_, err = fmt.Fprintln(stdout)
	}
	return err
}

type PolicySetCmd struct {
	File       string  `arg:"" help:"The document (HuJSON), or - for standard input." type:"path"`
	IfRevision *uint64 `name:"if-revision" help:"Change the policy only while it is at this revision (0: none set yet), as 'policy get' printed it."`
	JSON       bool    `name:"json" help:"Print the API's JSON."`
}

func (c *PolicySetCmd) Help() string {
	return `The document is checked first, here and by the server: an error names its line and column and
changes nothing. Every server enforces the new policy within the staleness bound. Example:

    ippool policy check policy.hujson && ippool policy set policy.hujson`
}

func (c *PolicySetCmd) Run(cli *CLI) error {
	text, err := readDocument(c.File)
	if err != nil {
		return err
	}
	if _, err := policy.Parse(text); err != nil {
		return fmt.Errorf("%s: %w", c.File, err)
	}
	cl, ctx, cancel, err := cli.connect()
	if err != nil {
		return err
	}
	defer cancel()
	var p wire.Policy
	if c.IfRevision != nil {
		p, err = cl.SetPolicyAt(ctx, text, *c.IfRevision)
	} else {
		p, err = cl.SetPolicy(ctx, text)
	}
	if err != nil {
		return err
	}
	if c.JSON {
		return printJSON(p)
	}
	_, err = fmt.Fprintf(stdout, "policy set: revision %d, %d rules\n", p.Revision, p.Rules)
	return err
}

type PolicyCheckCmd struct {
	File string `arg:"" help:"The document (HuJSON), or - for standard input." type:"path"`
}

func (c *PolicyCheckCmd) Run() error {
	text, err := readDocument(c.File)
	if err != nil {
		return err
	}
	p, err := policy.Parse(text)
	if err != nil {
		return fmt.Errorf("%s: %w", c.File, err)
	}
	_, err = fmt.Fprintf(stdout, "%s: %d rules, default %s\n", c.File, p.Len(), defaultOf(p))
	return err
}

func defaultOf(p *policy.Policy) string {
	if p.Document().Default == "deny" {
		return "deny"
	}
	return "allow"
}

func readDocument(file string) ([]byte, error) {
	var r io.Reader = os.Stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	text, err := io.ReadAll(io.LimitReader(r, policy.MaxBytes+1))
	if err != nil {
		return nil, err
	}
	if len(text) > policy.MaxBytes {
		return nil, fmt.Errorf("%s: over %d bytes, the most a policy may take", file, policy.MaxBytes)
	}
	return text, nil
}

type PolicyTestCmd struct {
	Client string   `arg:"" help:"The client ID (for a DNS client, its address or its name in --dns-client-map)."`
	Target string   `arg:"" help:"DOMAIN, or DOMAIN:PORT[/tcp|/udp] to test a flow as the connector does."`
	Source string   `name:"source" help:"The client's source address, for cidr: selectors (default: the client ID when it is an address)."`
	Tag    []string `help:"The client's tailnet tags (tag:NAME), for tag: selectors."`
	User   string   `help:"The client's tailnet login, for user: selectors."`
	JSON   bool     `name:"json" help:"Print the API's JSON."`
}

func (c *PolicyTestCmd) Help() string {
	return `The server decides from the policy it holds now and prints the rule that matched first ("default"
when none did) and its action; for an egress rule, also the source address the connector would use.
Without a port it tests the name, as DNS and allocation do. Example:

    $ ippool policy test alice-laptop git.corp.example:443/tcp
    eng-git allow`
}

func (c *PolicyTestCmd) Run(cli *CLI) error {
	req := wire.PolicyTest{Client: c.Client, Addr: c.Source, Tags: c.Tag, User: c.User}
	target := c.Target
	if host, rest, ok := strings.Cut(target, ":"); ok {
		target = host
		port, proto, _ := strings.Cut(rest, "/")
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return fmt.Errorf("%q: the port after ':' must be 1 to 65535", c.Target)
		}
		req.Port, req.Proto = uint16(n), proto
		if proto != "" && proto != "tcp" && proto != "udp" {
			return fmt.Errorf("%q: the protocol after '/' is tcp or udp", c.Target)
		}
	}
	req.Domain = target
	cl, ctx, cancel, err := cli.connect()
	if err != nil {
		return err
	}
	defer cancel()
	d, err := cl.TestPolicy(ctx, req)
	if err != nil {
		return err
	}
	if c.JSON {
		return printJSON(d)
	}
	line := d.Rule + " " + d.Action
	if d.Egress != "" {
		line += " " + d.Egress
	}
	_, err = fmt.Fprintln(stdout, line)
	return err
}
