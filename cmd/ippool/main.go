// Command ippool is the ippool server and its command-line client: `serve`
// runs a server; every other verb talks to a server's HTTP API.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/willabides/kongplete"

	"github.com/ippool/ippool/client"
	"github.com/ippool/ippool/internal/buildinfo"
	"github.com/ippool/ippool/pool"
)

// CLI is the whole command line; kong fills it and calls the chosen verb's
// Run with it, so every verb sees the global flags.
type CLI struct {
	Version kong.VersionFlag `short:"v" help:"Print the version of this binary and the log entry versions it reads and writes, and exit." env:"-"`

	Addr    []string      `help:"Server HTTP address(es); several spread load and fail over." default:"${http_addr}" sep:"," group:"client"`
	Timeout time.Duration `help:"Longest a command may wait for the servers, failover included (bench: per operation)." default:"30s" group:"client"`
	Token   string        `help:"ACL token, sent as a bearer token (ippool acl bootstrap prints the first)." group:"client"`
	// HTTPS to the servers: https:// addresses, checked against --ca-cert;
	// --client-cert and --client-key when the servers ask for a client
	// certificate (serve --http-client-ca).
	CACert     string `name:"ca-cert" help:"CA certificate (PEM) that signed the servers' HTTPS certificates (default: the system's)." env:"IPPOOL_CACERT" group:"client"`
	ClientCert string `name:"client-cert" help:"Client certificate (PEM) for servers started with --http-client-ca." group:"client"`
	ClientKey  string `name:"client-key" help:"Private key (PEM) of --client-cert." group:"client"`

	Serve    ServeCmd      `cmd:"" help:"Run an ippool server."`
	Alloc    AllocCmd      `cmd:"" help:"Print a client's address for a domain, allocating one if needed."`
	Lookup   LookupCmd     `cmd:"" help:"Print the domain a client's address stands for (exit 2 if none)."`
	Release  ReleaseCmd    `cmd:"" help:"Release a client's mapping for a domain, or all of its mappings."`
	List     ListCmd       `cmd:"" help:"List a client's mappings."`
	Cluster  ClusterCmd    `cmd:"" help:"Show or change the cluster's membership."`
	Snapshot SnapshotCmd   `cmd:"" help:"Back up, restore or inspect the pool state."`
	Pool     PoolCmd       `cmd:"" help:"Show or change the pool configuration."`
	TLS      TLSCmd        `cmd:"" name:"tls" help:"Make certificates for mutual TLS between servers."`
	ACL      ACLCmd        `cmd:"" name:"acl" help:"Turn access control on (bootstrap)."`
	Tokens   TokenCmd      `cmd:"" name:"token" help:"Create, list and revoke ACL tokens."`
	Policy   PolicyCmd     `cmd:"" help:"Show, set or test who may reach which domains (the policy)."`
	Bench    BenchCmd      `cmd:"" help:"Generate load against servers and report latency."`
	Conn     ConnCmd       `cmd:"" name:"connector" help:"The connector's firewall rules."`
	VersionC VersionCmd    `cmd:"" name:"version" help:"Print the version of this binary."`
	Complete CompletionCmd `cmd:"" name:"completion" help:"Print a shell completion script (bash, zsh, fish)."`
}

func main() {
	var cli CLI
	parser, err := newParser(&cli)
	if err != nil {
		// The CLI struct itself is wrong: a bug, not bad input.
		fmt.Fprintf(os.Stderr, "ippool: %v\n", err)
		os.Exit(1)
	}
	// A shell asking for completions (COMP_LINE set by the script that
	// `ippool completion` prints) is answered here, and the process exits.
	kongplete.Complete(parser)
	kctx, err := parser.Parse(os.Args[1:])
	if err != nil {
		var pe *kong.ParseError
		if errors.As(err, &pe) {
			_ = pe.Context.PrintUsage(true)
			fmt.Fprintln(os.Stderr)
		}
		fmt.Fprintf(os.Stderr, "ippool: %v\n", err)
		os.Exit(1)
	}
	if err := kctx.Run(); err != nil {
		os.Exit(report(os.Stderr, err))
	}
}

// newParser is the command line's parser, filling cli.
func newParser(cli *CLI) (*kong.Kong, error) {
	return kong.New(cli,
		kong.Name("ippool"),
		kong.Description("A highly available IPv4 address pool replicated with Raft."),
		kong.UsageOnError(),
		kong.Bind(cli),
		// Every flag can also be set as IPPOOL_<FLAG> (dashes as
		// underscores), as DESIGN.md promises; a flag that must not be
		// read from the environment says env:"-".
		kong.DefaultEnvars("IPPOOL"),
		defaults(),
		kong.Vars{"version": buildinfo.Get().String()},
		kong.ExplicitGroups(flagGroups),
		kong.Configuration(serveConfig),
	)
}

// exitError carries an exit status other than 1, so a script can tell one
// outcome (say, "not found") from a failure.
type exitError struct {
	status int
	err    error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// report prints err as "ippool: <message> (<code>)" and returns the exit
// status. The code is the API's word, for scripts that grep for it.
func report(w io.Writer, err error) int {
	status := 1
	var ee *exitError
	if errors.As(err, &ee) {
		status = ee.status
	}
	if code := errCode(err); code != "" {
		fmt.Fprintf(w, "ippool: %v (%s)\n", err, code)
	} else {
		fmt.Fprintf(w, "ippool: %v\n", err)
	}
	return status
}

// errCode is the code of a server's or the pool's error, "" for others.
func errCode(err error) string {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	var pe *pool.Error
	if errors.As(err, &pe) {
		return string(pe.Code)
	}
	return ""
}

// client returns a Client for the --addr servers.
func (cli *CLI) client() (*client.Client, error) {
	tlsCfg, err := cli.httpsConfig()
	if err != nil {
		return nil, err
	}
	return client.NewWithOptions(cli.Addr, client.Options{Token: cli.Token, TLS: tlsCfg, FailWhenAbsent: true})
}

// connect returns a client of the configured servers and a context bounded
// by --timeout, the prologue of every verb that talks to a server.
func (cli *CLI) connect() (*client.Client, context.Context, context.CancelFunc, error) {
	cl, err := cli.client()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := cli.context()
	return cl, ctx, cancel, nil
}

// context ends on --timeout or on Ctrl-C, whichever first, so a command
// against an unreachable cluster gives up instead of hanging.
func (cli *CLI) context() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if cli.Timeout <= 0 {
		return ctx, stop
	}
	ctx, cancel := context.WithTimeout(ctx, cli.Timeout)
	return ctx, func() { cancel(); stop() }
}

// httpsConfig is the TLS configuration --ca-cert, --client-cert and
// --client-key describe; nil when none is given.
func (cli *CLI) httpsConfig() (*tls.Config, error) {
	if cli.CACert == "" && cli.ClientCert == "" && cli.ClientKey == "" {
		return nil, nil
	}
	if (cli.ClientCert == "") != (cli.ClientKey == "") {
		return nil, errors.New("--client-cert and --client-key go together: give both, or neither")
	}
	cfg := &tls.Config{}
	if cli.CACert != "" {
		pem, err := os.ReadFile(cli.CACert)
		if err != nil {
			return nil, fmt.Errorf("--ca-cert: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-cert %s holds no PEM certificate", cli.CACert)
		}
	}
	if cli.ClientCert != "" {
		cert, err := tls.LoadX509KeyPair(cli.ClientCert, cli.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("--client-cert/--client-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// flagGroups order and title serve's flags in --help, and set the client
// flags every verb takes apart from them.
var flagGroups = []kong.Group{
	{Key: "server", Title: "Server and cluster"},
	{Key: "pool", Title: "Pool"},
	{Key: "tls", Title: "TLS between servers"},
	{Key: "http", Title: "HTTP API"},
	{Key: "dns", Title: "DNS"},
	{Key: "connector", Title: "Connector (TPROXY gateway)"},
	{Key: "tailnet", Title: "Tailnet"},
	{Key: "limits", Title: "Limits"},
	{Key: "logging", Title: "Logging"},
	{Key: "client", Title: "Client (every other verb: where the servers are and how to reach them)"},
}
