package main

// The access control verbs: `acl bootstrap` once per cluster, then `token
// create`, `token list` and `token revoke` with an admin token.

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/ippool/ippool/client"
)

// ACLCmd groups the verbs that turn access control on.
type ACLCmd struct {
	Bootstrap ACLBootstrapCmd `cmd:"" help:"Turn access control on for the whole cluster and print the first admin token (once per cluster)."`
}

type ACLBootstrapCmd struct {
	JSON bool `name:"json" help:"Print the API's JSON."`
}

func (c *ACLBootstrapCmd) Help() string {
	return `From then on every request but /healthz and /readyz needs a token. The secret is printed once and
the cluster keeps only its hash: store it like a root password. Example:

    export IPPOOL_TOKEN=$(ippool acl bootstrap)
    ippool token create --role allocate --description "gateway 1"`
}

func (c *ACLBootstrapCmd) Run(cli *CLI) error {
	cl, ctx, cancel, err := cli.connect()
	if err != nil {
		return err
	}
	defer cancel()
	t, err := cl.BootstrapACL(ctx)
	if err != nil {
		return err
	}
	return printToken(t, c.JSON)
}

// printToken prints a new token: its secret alone on stdout, so a script
// can capture it, and its accessor on stderr, which `token revoke` takes
// (Consul prints both, as AccessorID and SecretID); or the API's JSON.
func printToken(t client.Token, asJSON bool) error {
	if asJSON {
		return printJSON(t)
	}
	if _, err := fmt.Fprintln(stdout, t.Secret); err != nil {
		return err
	}
	_, err := fmt.Fprintf(stderr, "accessor %s (role %s): `ippool token revoke %s` revokes it; the secret above is shown only once\n", t.Accessor, t.Role, t.Accessor)
	return err
}

// TokenCmd groups the token verbs; they need an admin token.
type TokenCmd struct {
	Create TokenCreateCmd `cmd:"" help:"Create a token and print its secret."`
	List   TokenListCmd   `cmd:"" help:"List the cluster's tokens (accessors, roles, descriptions; never secrets)."`
	Revoke TokenRevokeCmd `cmd:"" help:"Revoke a token on every server."`
}

type TokenCreateCmd struct {
	Role        string `required:"" enum:"read,allocate,admin" help:"read: look up, list, status, pool, metrics; allocate: also allocate (DNS front ends, gateways); admin: everything."`
	Description string `help:"What the token is for, shown by token list."`
	JSON        bool   `name:"json" help:"Print the API's JSON (with the accessor) instead of the secret alone."`
}

func (c *TokenCreateCmd) Help() string {
	return "Example:\n\n    ippool token create --role allocate --description \"gateway 1\""
}

func (c *TokenCreateCmd) Run(cli *CLI) error {
	cl, ctx, cancel, err := cli.connect()
	if err != nil {
		return err
	}
	defer cancel()
	t, err := cl.CreateToken(ctx, c.Role, c.Description)
	if err != nil {
		return err
	}
	return printToken(t, c.JSON)
}

type TokenListCmd struct {
	JSON bool `name:"json" help:"Print the API's JSON."`
}

func (c *TokenListCmd) Run(cli *CLI) error {
	cl, ctx, cancel, err := cli.connect()
	if err != nil {
		return err
	}
	defer cancel()
	ts, err := cl.Tokens(ctx)
	if err != nil {
		return err
	}
	if c.JSON {
		return printJSON(map[string]any{"tokens": ts})
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCESSOR\tROLE\tCREATED\tDESCRIPTION")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Accessor, t.Role, t.Created.UTC().Format(time.RFC3339), t.Description)
	}
	return tw.Flush()
}

type TokenRevokeCmd struct {
	Accessor string `arg:"" help:"The token's accessor, as token list shows it."`
}

func (c *TokenRevokeCmd) Run(cli *CLI) error {
	cl, ctx, cancel, err := cli.connect()
	if err != nil {
		return err
	}
	defer cancel()
	if err := cl.RevokeToken(ctx, c.Accessor); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "revoked %s\n", c.Accessor)
	return err
}
