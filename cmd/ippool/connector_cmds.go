package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/ippool/ippool/internal/clientid"
	"github.com/ippool/ippool/internal/connector"
	"github.com/ippool/ippool/pool"
)

// ConnectorFlags are serve's connector settings, embedded in ServeCmd.
type ConnectorFlags struct {
	Connector                 bool          `help:"Carry clients' TCP and UDP flows sent to pool addresses (and --v6-prefix addresses) to the domain each address stands for that client, on the same port. Linux only (TPROXY); needs CAP_NET_ADMIN. Clients are named as the DNS server names them (source address or --dns-client-map); domains are resolved through --dns-upstream."`
	ConnectorRules            string        `help:"on: install the connector's nftables table (inet ippool), policy rule and local route at start, replacing any a crashed run left, and remove them at stop; off: leave them to you ('ippool connector rules' prints them)." default:"on" enum:"on,off"`
	ConnectorPort             int           `help:"Port the rules hand flows to, on 127.0.0.1 and ::1." default:"${connector_port}"`
	ConnectorMark             uint32        `help:"Packet mark of flows handed to the connector, matched by its policy rule." default:"${connector_mark}"`
	ConnectorTable            int           `help:"Routing table of the connector's local route; also its policy rule's priority." default:"${connector_table}"`
	ConnectorMaxFlows         int           `help:"Concurrent flows at most, TCP and UDP together; past it new flows are reset (UDP: dropped)." default:"${connector_max_flows}"`
	ConnectorClientFlows      int           `help:"Concurrent flows at most per client." default:"${connector_client_flows}"`
	ConnectorClientRate       float64       `help:"New flows per second per client (0: no limit)." default:"${connector_client_rate}"`
	ConnectorClientBurst      int           `help:"Bucket size of --connector-client-rate (default twice the rate)."`
	ConnectorDialTimeout      time.Duration `help:"Longest wait for one address of a domain to accept; then the next is tried." default:"5s"`
	ConnectorIdleTimeout      time.Duration `help:"A TCP flow that moved no byte either way for this long is reset." default:"15m"`
	ConnectorHalfCloseTimeout time.Duration `help:"A TCP flow one side of which has finished (its FIN passed on) ends once no byte moved either way for this long, unless the other side finishes too, so that an upstream that never closes cannot hold a client's flows until the idle timeout." default:"${connector_half_close_timeout}"`
	ConnectorUDPIdleTimeout   time.Duration `name:"connector-udp-idle-timeout" help:"A UDP flow without a datagram either way for this long ends." default:"60s"`
	ConnectorAllow            []string      `help:"Prefixes the connector may dial although they are private (RFC 1918, CGNAT 100.64.0.0/10, loopback, link-local, unique local IPv6) or in one of this host's networks, which it otherwise refuses: a name's owner could point it at what lies behind the gateway. Pool and --v6-prefix addresses stay refused." sep:","`
}

// connectorConfig is the connector's configuration from the flags; pool and
// resolver come from the server.
func (c *ServeCmd) connectorConfig(log *slog.Logger) (connector.Config, error) {
	cfg := connector.Config{
		Port: c.ConnectorPort, Mark: c.ConnectorMark, Table: c.ConnectorTable, Rules: c.ConnectorRules == "on",
		MaxFlows: c.ConnectorMaxFlows, MaxClientFlows: c.ConnectorClientFlows,
		ClientRate: c.ConnectorClientRate, ClientBurst: c.ConnectorClientBurst,
		DialTimeout: c.ConnectorDialTimeout, IdleTimeout: c.ConnectorIdleTimeout, UDPIdleTimeout: c.ConnectorUDPIdleTimeout,
		HalfCloseTimeout: c.ConnectorHalfCloseTimeout,
		Logger:           log,
	}
	if c.ConnectorMaxFlows <= 0 || c.ConnectorClientFlows <= 0 || c.ConnectorClientRate < 0 {
		return cfg, fmt.Errorf("--connector-max-flows and --connector-client-flows must be positive, --connector-client-rate not negative")
	}
	if c.DNSClientMap != "" {
		m, err := clientid.Load(c.DNSClientMap)
		if err != nil {
			return cfg, fmt.Errorf("--dns-client-map: %w", err)
		}
		cfg.Clients = m
	}
	dcfg, err := c.dnsConfig(log)
	if err != nil {
		return cfg, err
	}
	cfg.V6Prefix, cfg.IgnoreDestinations = dcfg.V6Prefix, dcfg.IgnoreDestinations
	if cfg.Allow, err = parsePrefixes("--connector-allow", c.ConnectorAllow); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// parsePrefixes reads a list flag of prefixes, naming the flag and the
// entry it cannot read.
func parsePrefixes(flag string, list []string) ([]netip.Prefix, error) {
	var ps []netip.Prefix
	for _, s := range list {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a prefix (like 10.0.0.0/8)", flag, s)
		}
		ps = append(ps, p.Masked())
	}
	return ps, nil
}

// ConnCmd groups the connector's verbs.
type ConnCmd struct {
	Rules ConnectorRulesCmd `cmd:"" help:"Print the nft and ip commands that steer flows to a connector run with --connector-rules=off."`
}

// ConnectorRulesCmd prints the rules the connector would install.
type ConnectorRulesCmd struct {
	Pool           string `help:"The pool, as serve's --pool (default: ask the server at --addr)."`
	Exclude        string `help:"Addresses excluded from the pool, as serve's --exclude."`
	V6Prefix       string `name:"v6-prefix" help:"serve's --v6-prefix, if any." env:"IPPOOL_V6_PREFIX"`
	ConnectorPort  int    `help:"serve's --connector-port." default:"${connector_port}"`
	ConnectorMark  uint32 `help:"serve's --connector-mark." default:"${connector_mark}"`
	ConnectorTable int    `help:"serve's --connector-table." default:"${connector_table}"`
}

func (c *ConnectorRulesCmd) Help() string {
	return "Examples:\n\n    ippool connector rules --pool 198.18.0.0/15 | sh\n    ippool connector rules > rules.sh   # the pool from the server at --addr"
}

func (c *ConnectorRulesCmd) Run(cli *CLI) error {
	var cfg pool.Config
	if c.Pool != "" {
		var err error
		if cfg, err = pool.ParseConfig(c.Pool, c.Exclude, pool.DefaultLifetime); err != nil {
			return fmt.Errorf("--pool/--exclude: %w", err)
		}
	} else {
		cl, ctx, cancel, err := cli.connect()
		if err != nil {
			return err
		}
		defer cancel()
		p, err := cl.Pool(ctx)
		if err != nil {
			return fmt.Errorf("asking the server for the pool (or give --pool): %w", err)
		}
		if cfg, err = pool.ParseConfig(p.Pool, p.Exclude, pool.DefaultLifetime); err != nil {
			return err
		}
	}
	set, err := cfg.Addresses()
	if err != nil {
		return err
	}
	ranges := set.Ranges()
	ccfg := connector.Config{Port: c.ConnectorPort, Mark: c.ConnectorMark, Table: c.ConnectorTable}
	if c.V6Prefix != "" {
		p, err := netip.ParsePrefix(c.V6Prefix)
		if err == nil {
			p, err = pool.CheckV6Prefix(p)
		}
		if err != nil {
			return fmt.Errorf("--v6-prefix %q: %v", c.V6Prefix, err)
		}
		ccfg.V6Prefix = p
	}
	r, err := connector.RulesFor(ccfg, ranges)
	if err != nil {
		return err
	}
	_, err = os.Stdout.WriteString(r.Script())
	return err
}
