// Package wire holds the JSON types of the /v1 HTTP API: requests, answers,
// the error body and the cluster status. It imports nothing of the server,
// so a program using the Go client links no Raft.
package wire

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"time"
)

// Mapping is one (client, domain) <-> address pairing: the answer to
// allocating, getting and looking up, and an entry of a List.
type Mapping struct {
	// Client is left out of a List's entries: the list names it once.
	Client string     `json:"client,omitempty"`
	Domain string     `json:"domain"`
	IP     netip.Addr `json:"ip"`
	// LastUsed is left out of an allocation's answer, which the server
	// gives without reading the mapping back.
	LastUsed time.Time `json:"last_used,omitzero"`
}

// List is the answer to GET /v1/clients/{client}.
type List struct {
	Client   string    `json:"client"`
	Mappings []Mapping `json:"mappings"`
	// Total (the client's mapping count) and Offset (the position of the
	// first entry among them) come only with a page (?limit=).
	Total  *int `json:"total,omitempty"`
	Offset *int `json:"offset,omitempty"`
}

// Release is the answer to DELETE /v1/clients/{client}/domains/{domain}.
type Release struct {
	Client   string `json:"client"`
	Domain   string `json:"domain"`
	Released bool   `json:"released"`
}

// ReleaseClient is the answer to DELETE /v1/clients/{client}.
type ReleaseClient struct {
	Client   string `json:"client"`
	Released int    `json:"released"`
}

// Error is the body of every answer that is not a 2xx. Message is a
// sentence for an operator, Code a word for programs (see pool.Code).
type Error struct {
	// Code comes first so the body stays byte for byte what servers have
	// always sent.
	Code    string `json:"code"`
	Message string `json:"error"`
}

// Status is one server's view of the cluster: the answer to GET /v1/cluster.
type Status struct {
	ID         string `json:"id"`
	Addr       string `json:"addr"`
	State      string `json:"state"`
	LeaderID   string `json:"leader_id"`
	LeaderAddr string `json:"leader_addr"`
	Term       uint64 `json:"term"`
	Commit     uint64 `json:"commit_index"`
	Applied    uint64 `json:"applied_index"`
	LastIndex  uint64 `json:"last_index"`
	Pool       string `json:"pool,omitempty"`
	// StaleBound (B) and ReuseHold (Q) are the bounded-staleness numbers
	// (internal/cluster/current.go); LocalReads says whether this server answers from
	// local state right now; HeldAddresses counts addresses under a reuse
	// hold.
	StaleBound    string `json:"stale_bound"`
	ReuseHold     string `json:"reuse_hold"`
	LocalReads    bool   `json:"local_reads"`
	HeldAddresses int    `json:"held_addresses"`
	// Version is this server's release, and EntryVersions the log entry
	// versions it reads. ClusterEntryVersion is the newest entry version
	// every server of the cluster reads, as far as this server knows: what
	// a leader may write (docs/upgrading.md).
	Version             string `json:"version,omitempty"`
	EntryVersions       []int  `json:"entry_versions,omitempty"`
	ClusterEntryVersion int    `json:"cluster_entry_version,omitempty"`
	// CertificateExpires is when this server's cluster certificate
	// expires (RFC 3339); empty without TLS on the cluster port.
	CertificateExpires string `json:"certificate_expires,omitempty"`
	// QuotasEnforced says whether the cluster writes the log entry version
	// that carries the mapping quotas (--max-mappings and the others), and
	// QuotasReason why not. Usage is this server's state against Limits,
	// its flags (the leader's apply); Alarms are the quotas reached, or
	// that refused an allocation in the last minutes, like etcd's NOSPACE.
	QuotasEnforced bool         `json:"quotas_enforced"`
	QuotasReason   string       `json:"quotas_reason,omitempty"`
	Usage          *QuotaUsage  `json:"usage,omitempty"`
	Limits         *QuotaLimits `json:"limits,omitempty"`
	Alarms         []QuotaAlarm `json:"alarms,omitempty"`
	// EgressMissing are the policy's egress addresses that the answering
	// server runs a connector without: its flows from them are refused.
	EgressMissing []string       `json:"egress_missing,omitempty"`
	Servers       []ServerStatus `json:"servers"`
}

// QuotaUsage is what a server's state holds: DomainBytes counts each
// distinct domain name once, as the state stores it.
type QuotaUsage struct {
	Clients     int   `json:"clients"`
	Mappings    int   `json:"mappings"`
	Domains     int   `json:"domains"`
	DomainBytes int64 `json:"domain_bytes"`
}

// QuotaLimits are the bounds on the state; 0 is no bound.
type QuotaLimits struct {
	MaxClients           int   `json:"max_clients"`
	MaxMappings          int   `json:"max_mappings"`
	MaxMappingsPerClient int   `json:"max_mappings_per_client"`
	MaxDomainBytes       int64 `json:"max_domain_bytes"`
}

// QuotaAlarm is a quota at its limit or that refused an allocation lately
// (LastExceeded, RFC 3339, by the cluster's time). Quota is clients,
// mappings, mappings_per_client or domain_bytes; Usage is absent for
// mappings_per_client, which is per client.
type QuotaAlarm struct {
	Quota        string `json:"quota"`
	Flag         string `json:"flag"`
	Usage        int64  `json:"usage,omitempty"`
	Limit        int64  `json:"limit"`
	LastExceeded string `json:"last_exceeded,omitempty"`
	Message      string `json:"message"`
}

// ServerStatus describes one member as this server sees it, with what the
// member said of itself when asked just now.
type ServerStatus struct {
	ID        string `json:"id"`
	Addr      string `json:"addr"`
	Voter     bool   `json:"voter"`
	Role      string `json:"role"`
	Reachable bool   `json:"reachable"`
	Term      uint64 `json:"term,omitempty"`
	Applied   uint64 `json:"applied_index,omitempty"`
	// Version and EntryVersions are what the member says it runs and
	// reads; empty for a member of a release before 0.3.0, which reads
	// entry versions 1 to 3, or one that did not answer.
	Version       string `json:"version,omitempty"`
	EntryVersions []int  `json:"entry_versions,omitempty"`
	Error         string `json:"error,omitempty"`
	// UnreachableSince is when the leader last heard from a member that
	// did not answer (RFC 3339); only the leader knows it.
	UnreachableSince string `json:"unreachable_since,omitempty"`
}

// Pool is the pool configuration in the form the --pool and --exclude flags
// take: the answer to GET /v1/pool, the body of PUT /v1/pool, and the answer
// to that PUT with Released set.
type Pool struct {
	Pool     string        `json:"pool"`
	Exclude  string        `json:"exclude"`
	Lifetime time.Duration `json:"-"`
	// Released is how many mappings fell outside a new pool; only a PUT's
	// answer has it.
	Released *int `json:"released,omitempty"`
	// ReleasedClients is how many clients hold those mappings, and DryRun
	// says the change was not made (POST /v1/pool/dry-run): the answer
	// says what it would release.
	ReleasedClients *int `json:"released_clients,omitempty"`
	DryRun          bool `json:"dry_run,omitempty"`
	// ReuseHold (Q) and StaleBound (B) are read-only: what the answering
	// server reports, as durations like "5s"; a PUT ignores them, so that a
	// GET's answer can be sent back changed.
	ReuseHold  string `json:"reuse_hold,omitempty"`
	StaleBound string `json:"stale_bound,omitempty"`
}

// poolJSON is Pool as it travels; the lifetime stays raw because it comes
// in two forms.
type poolJSON struct {
	Pool       string          `json:"pool"`
	Exclude    string          `json:"exclude"`
	Lifetime   json.RawMessage `json:"lifetime"`
	Released   *int            `json:"released,omitempty"`
	ReuseHold  string          `json:"reuse_hold,omitempty"`
	StaleBound string          `json:"stale_bound,omitempty"`
	// Since 0.3.0, in the answer to POST /v1/pool/dry-run.
	ReleasedClients *int `json:"released_clients,omitempty"`
	DryRun          bool `json:"dry_run,omitempty"`
}

// MarshalJSON writes the lifetime as a Go duration ("48h0m0s"): people read
// this JSON, and a count of nanoseconds reads badly.
func (p Pool) MarshalJSON() ([]byte, error) {
	lt, _ := json.Marshal(p.Lifetime.String())
	return json.Marshal(poolJSON{Pool: p.Pool, Exclude: p.Exclude, Lifetime: lt, Released: p.Released, ReuseHold: p.ReuseHold, StaleBound: p.StaleBound,
		ReleasedClients: p.ReleasedClients, DryRun: p.DryRun})
}

// UnmarshalJSON takes the lifetime as a duration string or, as
// encoding/json writes a time.Duration, a number of nanoseconds. Fields it
// does not know are skipped, so that an older client can read a newer
// server's answer.
func (p *Pool) UnmarshalJSON(b []byte) error {
	var j poolJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	d, _, err := parseLifetime(j.Lifetime, true)
	if err != nil {
		return err
	}
	*p = j.pool(d)
	return nil
}

func (j poolJSON) pool(lifetime time.Duration) Pool {
	return Pool{Pool: j.Pool, Exclude: j.Exclude, Lifetime: lifetime, Released: j.Released, ReuseHold: j.ReuseHold, StaleBound: j.StaleBound,
		ReleasedClients: j.ReleasedClients, DryRun: j.DryRun}
}

// DecodePoolRequest reads a PUT /v1/pool body as the server must, stricter
// than UnmarshalJSON: a field the API does not know is an error, since a
// misspelt "exclude" would otherwise quietly clear the exclusions; and the
// lifetime must be a duration string, since a bare number like 48 would be
// 48 nanoseconds. A lifetime left out or empty is defaultLifetime; an
// explicit zero stays zero, for the pool's validation to refuse. A lifetime
// string that is not a duration is a *LifetimeError; reading errors (such
// as *http.MaxBytesError) come back unwrapped.
func DecodePoolRequest(r io.Reader, defaultLifetime time.Duration) (Pool, error) {
	var j poolJSON
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return Pool{}, err
	}
	d, given, err := parseLifetime(j.Lifetime, false)
	if err != nil {
		return Pool{}, err
	}
	if !given {
		d = defaultLifetime
	}
	return j.pool(d), nil
}

// LifetimeError is a lifetime string that is not a duration: a mistake in
// the configuration rather than malformed JSON, which the server answers
// with a different code.
type LifetimeError struct{ Text string }

func (e *LifetimeError) Error() string {
	return fmt.Sprintf("lifetime %q is not a duration like 48h", e.Text)
}

// parseLifetime reads a raw lifetime; given is false when it was absent,
// null or "". numbers allows a count of nanoseconds.
func parseLifetime(raw json.RawMessage, numbers bool) (d time.Duration, given bool, err error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		if s == "" {
			return 0, false, nil
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, false, &LifetimeError{Text: s}
		}
		return d, true, nil
	}
	if !numbers {
		return 0, false, fmt.Errorf("lifetime %s is not a duration string like \"48h\"", raw)
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, false, fmt.Errorf("lifetime %s is neither a duration nor a number", raw)
	}
	return time.Duration(n), true, nil
}

// Token is a token as the API shows it: the answer to creating one (with
// Secret, shown this once), an entry of TokenList (without), and the answer
// to GET /v1/acl/self.
type Token struct {
	Accessor    string    `json:"accessor,omitempty"`
	Secret      string    `json:"secret,omitempty"`
	Role        string    `json:"role"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created,omitzero"`
}

// TokenList is the answer to GET /v1/acl/tokens.
type TokenList struct {
	Tokens []Token `json:"tokens"`
}

// TokenRequest is the body of POST /v1/acl/tokens.
type TokenRequest struct {
	Role        string `json:"role"`
	Description string `json:"description,omitempty"`
}

// ACLSelf is the answer to GET /v1/acl/self: whether access control is on
// and, when it is, the caller's token.
type ACLSelf struct {
	Enabled bool   `json:"enabled"`
	Token   *Token `json:"token,omitempty"`
}

// DefaultMaxRestoreBytes is the default bound of a snapshot sent to
// PUT /v1/snapshot (serve --max-restore-bytes): the HTTP API refuses a
// larger body, and the cluster a larger restore.
const DefaultMaxRestoreBytes = 4 << 30

// Policy is the answer to GET /v1/policy and PUT /v1/policy: the document
// as stored (comments and all), its revision (0: no policy was ever set,
// and every request is allowed) and how many rules it has. PUT takes the
// document itself as its body, and If-Match with a revision to change only
// that revision (or ?if_revision=N).
type Policy struct {
	Text     string `json:"text,omitempty"`
	Revision uint64 `json:"revision"`
	Rules    int    `json:"rules"`
	// Hits (GET only) are the checks each rule decided on the server
	// that answers, since the revision was set, in document order, the
	// default's last.
	Hits []PolicyRuleHits `json:"hits,omitempty"`
}

// PolicyRuleHits is one rule's name, action and decisions.
type PolicyRuleHits struct {
	Rule   string `json:"rule"`
	Action string `json:"action"`
	Hits   uint64 `json:"hits"`
}

// PolicyTest is the body of POST /v1/policy/test: who asks for what. A
// test without Port checks the name, as DNS and allocation do; with one, a
// flow, as the connector does (Proto tcp, the default, or udp).
type PolicyTest struct {
	Client string   `json:"client"`
	Domain string   `json:"domain"`
	Port   uint16   `json:"port,omitempty"`
	Proto  string   `json:"proto,omitempty"`
	Addr   string   `json:"addr,omitempty"`
	Tags   []string `json:"tags,omitempty"`
	User   string   `json:"user,omitempty"`
}

// PolicyDecision is the answer to POST /v1/policy/test: the rule that
// decided (its name, "default" for the default, and its index, -1 for the
// default), the action, and for an egress rule the source address the
// connector would dial from; Revision is the policy's that decided.
type PolicyDecision struct {
	Rule     string `json:"rule"`
	Index    int    `json:"index"`
	Action   string `json:"action"`
	Egress   string `json:"egress,omitempty"`
	Revision uint64 `json:"revision"`
}
