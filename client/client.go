// Package client talks to ippool servers over their HTTP API (/v1). It is
// what the ippool CLI uses, and what other programs import to allocate and
// look up addresses without speaking HTTP themselves.
//
// A Client holds one or more server addresses. Any server of a cluster can
// answer any request (followers forward writes to the leader), so the
// addresses are only for failing over: a request goes to the server that
// last answered, and moves on to the next address when that one cannot be
// reached or answers 503 (no leader, no quorum), until the context ends.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

// Mapping is one (client, domain) <-> address pairing as a server reports it.
type Mapping = wire.Mapping

// SnapshotInfo says where in the replicated log a snapshot was taken, and by
// which server, so a backup can be told apart from another.
type SnapshotInfo struct {
	Index  uint64
	Term   uint64
	Server string
}

// PoolInfo is the pool configuration in the form the --pool and --exclude
// flags take. Its Released is for the server's answer to a change, which
// SetPool returns as a count; the server ignores it in a request.
type PoolInfo = wire.Pool

// APIError is an error a server answered with. Message is the server's
// sentence for an operator, Code its word for programs (see pool.Code).
type APIError struct {
	Status  int
	Code    string
	Message string

	// retryAfter is the server's Retry-After hint, for failing over.
	retryAfter time.Duration
}

func (e *APIError) Error() string { return e.Message }

// Is lets errors.Is(err, pool.ErrNotFound) and the other pool sentinels match
// a server's answer by its code, as they match the pool's own errors.
func (e *APIError) Is(target error) bool {
	switch t := target.(type) {
	case *pool.Error:
		return t.Msg == "" && string(t.Code) == e.Code
	case *APIError:
		return t.Code == e.Code && (t.Status == 0 || t.Status == e.Status) && t.Message == ""
	}
	return false
}

// Code names what went wrong in one word: the server's code for an
// *APIError, "timeout" or "canceled" when the context ended, "unreachable"
// when no server could be reached, "error" otherwise. The bench verb counts
// errors by it.
func Code(err error) string {
	var ae *APIError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &ae) && ae.Code != "":
		return ae.Code
	case errors.As(err, &ae):
		return "http_" + strconv.Itoa(ae.Status)
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case isConnError(err):
		return "unreachable"
	}
	return "error"
}

// Client is safe for concurrent use; share one per set of servers so that
// connections are reused.
type Client struct {
	bases []string // "http://host:port", no trailing slash
	hc    *http.Client
	// cur is the index of the server that answered last: requests stick to a
	// working server rather than trying a dead first one every time.
	cur atomic.Uint32

	// RetryFor bounds retrying when a request's context has no deadline;
	// without it a cluster without quorum would hold the caller forever.
	RetryFor time.Duration

	token          string
	failWhenAbsent bool
}

// Options configure a Client beyond its server addresses.
type Options struct {
	// Token is sent as "Authorization: Bearer <Token>" on every request,
	// once the cluster's ACLs are bootstrapped.
	Token string
	// TLS configures https:// addresses: the CA that signed the servers'
	// certificates and, when they ask for one, this client's certificate.
	// nil uses the system's roots.
	TLS *tls.Config
	// FailWhenAbsent ends a call at once when a whole round of addresses
	// refused the connection or named unknown hosts, instead of retrying
	// until the deadline: what a command line wants (a typo in an address
	// is said at once); a long-running caller that should wait out a whole
	// cluster restart leaves it off.
	FailWhenAbsent bool
}

// New returns a Client for the servers at addrs, each "host:port" or a base
// URL ("http://host:port", "https://host:port").
func New(addrs ...string) (*Client, error) {
	return NewWithOptions(addrs, Options{})
}

// NewWithOptions is New with a token or TLS settings.
func NewWithOptions(addrs []string, opts Options) (*Client, error) {
	if len(addrs) == 0 {
		return nil, errors.New("no server address given")
	}
	c := &Client{RetryFor: 10 * time.Second, token: opts.Token, failWhenAbsent: opts.FailWhenAbsent}
	for _, a := range addrs {
		b, err := baseURL(a)
		if err != nil {
			return nil, err
		}
		c.bases = append(c.bases, b)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	// The bench verb and busy gateways run hundreds of requests at once to
	// a handful of servers; Go's default of 2 idle connections per host
	// would make most of them open a new connection.
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	t.IdleConnTimeout = 90 * time.Second
	if opts.TLS != nil {
		t.TLSClientConfig = opts.TLS
	}
	c.hc = &http.Client{Transport: t}
	return c, nil
}

// Addrs returns the servers' base URLs, in the order given.
func (c *Client) Addrs() []string { return append([]string(nil), c.bases...) }

func baseURL(a string) (string, error) {
	a = strings.TrimSpace(a)
	if a == "" {
		return "", errors.New("empty server address")
	}
	if !strings.Contains(a, "://") {
		a = "http://" + a
	}
	u, err := url.Parse(a)
	if err != nil {
		return "", fmt.Errorf("server address %q: %v", a, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("server address %q is not host:port or an http(s) URL", a)
	}
	return strings.TrimRight(u.Scheme+"://"+u.Host+u.Path, "/"), nil
}

// Alloc returns the client's address for domain, allocating one if it has
// none (S1).
func (c *Client) Alloc(ctx context.Context, client, domain string) (Mapping, error) {
	var m Mapping
	domain, err := checkNames(client, domain)
	if err != nil {
		return m, err
	}
	err = c.call(ctx, http.MethodPost, path("clients", client, "domains", domain), nil, &m)
	return m, err
}

// Get returns the client's mapping for domain without allocating; an error
// matching pool.ErrNotFound if it has none.
func (c *Client) Get(ctx context.Context, client, domain string) (Mapping, error) {
	var m Mapping
	domain, err := checkNames(client, domain)
	if err != nil {
		return m, err
	}
	err = c.call(ctx, http.MethodGet, path("clients", client, "domains", domain), nil, &m)
	return m, err
}

// Lookup returns the domain the client's address stands for (S3); an error
// matching pool.ErrNotFound if none.
func (c *Client) Lookup(ctx context.Context, client string, ip netip.Addr) (Mapping, error) {
	var m Mapping
	err := c.call(ctx, http.MethodGet, path("clients", client, "ips", ip.String()), nil, &m)
	return m, err
}

// Release drops the client's mapping for domain and reports whether there
// was one.
func (c *Client) Release(ctx context.Context, client, domain string) (bool, error) {
	var r wire.Release
	domain, err := checkNames(client, domain)
	if err != nil {
		return false, err
	}
	err = c.call(ctx, http.MethodDelete, path("clients", client, "domains", domain), nil, &r)
	return r.Released, err
}

// ReleaseClient drops every mapping of the client and returns how many there
// were.
func (c *Client) ReleaseClient(ctx context.Context, client string) (int, error) {
	var r wire.ReleaseClient
	err := c.call(ctx, http.MethodDelete, path("clients", client), nil, &r)
	return r.Released, err
}

// List returns the client's mappings. consistent asks the server to confirm
// its state with the leader first, so the list includes every allocation
// already answered anywhere in the cluster.
func (c *Client) List(ctx context.Context, client string, consistent bool) ([]Mapping, error) {
	p := path("clients", client)
	if consistent {
		p += "?consistent=true"
	}
	var r wire.List
	if err := c.call(ctx, http.MethodGet, p, nil, &r); err != nil {
		return nil, err
	}
	for i := range r.Mappings {
		if r.Mappings[i].Client == "" {
			r.Mappings[i].Client = client
		}
	}
	return r.Mappings, nil
}

// Cluster returns the answering server's view of the cluster.
func (c *Client) Cluster(ctx context.Context) (wire.Status, error) {
	var s wire.Status
	err := c.call(ctx, http.MethodGet, "/v1/cluster", nil, &s)
	return s, err
}

// RemoveServer removes the server with the given ID from the cluster.
func (c *Client) RemoveServer(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, path("cluster", "servers", id), nil, nil)
}

// Snapshot streams a consistent snapshot of the pool state into w. It is
// retried on another server only until its first byte is written.
func (c *Client) Snapshot(ctx context.Context, w io.Writer) (SnapshotInfo, error) {
	info, body, err := c.OpenSnapshot(ctx)
	if err != nil {
		return info, err
	}
	defer body.Close()
	if _, err := io.Copy(w, body); err != nil {
		return info, fmt.Errorf("reading the snapshot: %w", err)
	}
	return info, nil
}

// OpenSnapshot starts a snapshot download and returns where it was taken
// before its bytes, so a caller can write a header ahead of them; the
// caller closes body.
func (c *Client) OpenSnapshot(ctx context.Context) (info SnapshotInfo, body io.ReadCloser, err error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/snapshot", nil)
	if err != nil {
		return SnapshotInfo{}, nil, err
	}
	h := resp.Header
	info.Server = h.Get("X-Ippool-Server")
	info.Index, _ = strconv.ParseUint(h.Get("X-Ippool-Index"), 10, 64)
	info.Term, _ = strconv.ParseUint(h.Get("X-Ippool-Term"), 10, 64)
	return info, resp.Body, nil
}

// Restore replaces the whole cluster's pool state with the snapshot read
// from r. A reader that is not an io.ReadSeeker is read into memory first, so
// the request can be sent again to another server.
func (c *Client) Restore(ctx context.Context, r io.Reader) error {
	b, err := replayable(r)
	if err != nil {
		return err
	}
	return c.call(ctx, http.MethodPut, "/v1/snapshot", b, nil)
}

// Pool returns the pool configuration.
func (c *Client) Pool(ctx context.Context) (PoolInfo, error) {
	var p PoolInfo
	err := c.call(ctx, http.MethodGet, "/v1/pool", nil, &p)
	return p, err
}

// SetPool changes the pool configuration and returns how many mappings fell
// outside the new pool and were released.
// PoolChangeReleases asks what SetPool(p) would release now, changing
// nothing: the mappings outside the new pool and the clients holding them.
func (c *Client) PoolChangeReleases(ctx context.Context, p PoolInfo) (mappings, clients int, err error) {
	body, err := json.Marshal(p)
	if err != nil {
		return 0, 0, err
	}
	var r PoolInfo
	if err := c.call(ctx, http.MethodPost, "/v1/pool/dry-run", bodyBytes(body), &r); err != nil {
		if errors.Is(err, pool.ErrNotFound) {
			return 0, 0, fmt.Errorf("the server cannot tell what a pool change would release (it runs a release before 0.3.0): %w", err)
		}
		return 0, 0, err
	}
	if r.Released == nil || !r.DryRun {
		return 0, 0, errors.New("the server's answer to a dry run of a pool change says nothing of what it would release")
	}
	if r.ReleasedClients != nil {
		clients = *r.ReleasedClients
	}
	return *r.Released, clients, nil
}

func (c *Client) SetPool(ctx context.Context, p PoolInfo) (int, error) {
	body, err := json.Marshal(p)
	if err != nil {
		return 0, err
	}
	var r PoolInfo
	if err := c.call(ctx, http.MethodPut, "/v1/pool", bodyBytes(body), &r); err != nil {
		return 0, err
	}
	if r.Released == nil {
		return 0, nil
	}
	return *r.Released, nil
}

// checkNames refuses, before anything is sent, a client ID or a domain
// the server would refuse, with the server's own sentence ("domain \"\" is
// empty" rather than a 404 for the route an empty segment makes), and
// returns the domain in the form the server stores: lower case, and an
// internationalised name in its ASCII form.
func checkNames(client, domain string) (string, error) {
	if err := pool.ValidateClientID(client); err != nil {
		return "", err
	}
	return pool.NormalizeDomain(domain)
}

// path joins escaped segments under /v1, so a client ID or domain can never
// step into another route.
func path(segs ...string) string {
	var b strings.Builder
	b.WriteString("/v1")
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// body yields a fresh reader over the same bytes for every attempt.
type body interface {
	open() (io.Reader, int64, error)
}

type bodyBytes []byte

func (b bodyBytes) open() (io.Reader, int64, error) { return bytes.NewReader(b), int64(len(b)), nil }

type bodySeeker struct {
	r     io.ReadSeeker
	start int64
	size  int64
}

func (b *bodySeeker) open() (io.Reader, int64, error) {
	if _, err := b.r.Seek(b.start, io.SeekStart); err != nil {
		return nil, 0, err
	}
	return io.LimitReader(b.r, b.size), b.size, nil
}

func replayable(r io.Reader) (body, error) {
	if rs, ok := r.(io.ReadSeeker); ok {
		start, err := rs.Seek(0, io.SeekCurrent)
		if err == nil {
			end, err := rs.Seek(0, io.SeekEnd)
			if err == nil {
				return &bodySeeker{r: rs, start: start, size: end - start}, nil
			}
		}
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return bodyBytes(b), nil
}

// call sends a request and decodes a 2xx answer's JSON into out (if not nil).
func (c *Client) call(ctx context.Context, method, p string, b body, out any) error {
	resp, err := c.do(ctx, method, p, b)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		drain(resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decoding the answer: %w", method, p, err)
	}
	drain(resp.Body)
	return nil
}

// do sends the request to the current server and fails over to the next on
// a connection error or a 503, round robin, pausing after each full round,
// until the context ends (or RetryFor has passed, when it has no deadline).
// It returns a 2xx response, or the last error.
func (c *Client) do(ctx context.Context, method, p string, b body) (*http.Response, error) {
	var giveUp time.Time
	if _, ok := ctx.Deadline(); !ok && c.RetryFor > 0 {
		giveUp = time.Now().Add(c.RetryFor)
	}
	n := len(c.bases)
	start := int(c.cur.Load()) % n
	backoff := 50 * time.Millisecond
	// answered is the last error a server answered with: when the context
	// ends during a retry, it says more than "deadline exceeded" does.
	var answered error
	// tlsFailed counts the last attempts in a row that failed the TLS
	// handshake: a certificate refused, one way or the other, is refused
	// again, so a whole round of them ends the call at once with that
	// error rather than with a timeout.
	tlsFailed := 0
	absent := 0
	for attempt := 0; ; attempt++ {
		i := (start + attempt) % n
		resp, retry, err := c.once(ctx, c.bases[i], method, p, b)
		if err == nil {
			c.cur.Store(uint32(i))
			return resp, nil
		}
		if ctx.Err() != nil && answered != nil {
			return nil, fmt.Errorf("%w (retried until %v)", answered, ctx.Err())
		}
		if _, ok := errors.AsType[*APIError](err); ok {
			answered = err
		}
		tlsFailed++
		if !isTLSError(err) {
			tlsFailed = 0
		}
		// A whole round of refused connections or unknown host names:
		// nothing listens at any address given, which waiting does not fix
		// (etcdctl fails so too). A server restarting among others that
		// answer never makes a whole round.
		absent++
		if !isAbsent(err) {
			absent = 0
		}
		if c.failWhenAbsent && absent == n {
			return nil, fmt.Errorf("%w; no ippool server answers at %s: is `ippool serve` running there? Give its HTTP address with --addr or IPPOOL_ADDR", err, strings.Join(c.bases, ", "))
		}
		if !retry || tlsFailed == n || ctx.Err() != nil || (!giveUp.IsZero() && time.Now().After(giveUp)) {
			return nil, err
		}
		// After every server has failed once, wait before the next round:
		// an election takes a moment, and hammering does not speed it up.
		if (attempt+1)%n == 0 {
			// Retry-After is whole seconds, coarser than an election on a
			// LAN, so it caps the pause rather than setting it.
			wait := backoff
			var ae *APIError
			if errors.As(err, &ae) && ae.retryAfter > 0 {
				wait = min(wait, ae.retryAfter)
				if ae.Status == http.StatusTooManyRequests {
					// A rate limit means it: no token before then.
					wait = ae.retryAfter
				}
			}
			backoff = min(2*backoff, time.Second)
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, err
			case <-t.C:
			}
		}
	}
}

// once makes one attempt. retry says whether another server might do better.
func (c *Client) once(ctx context.Context, base, method, p string, b body) (resp *http.Response, retry bool, err error) {
	var rd io.Reader
	var size int64
	if b != nil {
		r, n, err := b.open()
		if err != nil {
			return nil, false, err
		}
		rd, size = r, n
	}
	req, err := http.NewRequestWithContext(ctx, method, base+p, rd)
	if err != nil {
		return nil, false, err
	}
	if b != nil {
		req.ContentLength = size
		if method == http.MethodPut && strings.HasSuffix(p, "/snapshot") {
			req.Header.Set("Content-Type", "application/octet-stream")
		} else {
			req.Header.Set("Content-Type", "application/json")
		}
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err = c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, false, fmt.Errorf("%s %s: %w", method, base, ctx.Err())
		}
		// No answer came back (refused, reset, TLS failure): another server
		// may well answer.
		// *url.Error repeats the method and the whole URL; the server's
		// address is enough to say which one failed.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = &connError{base: base, err: ue.Err}
		}
		return nil, true, err
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, false, nil
	}
	ae := readAPIError(resp)
	resp.Body.Close()
	// 503 (no leader, no quorum, a feature not yet on every server) and a
	// 429 that says when to come back (a write rate limit) pass; a 429
	// without Retry-After (a quota) lasts until something else changes.
	retry = resp.StatusCode == http.StatusServiceUnavailable || (resp.StatusCode == http.StatusTooManyRequests && ae.retryAfter > 0)
	return nil, retry, ae
}

// readAPIError turns a non-2xx answer into an *APIError, with a sentence
// made up from the status when the body is not the API's error JSON (a proxy
// in between, say).
func readAPIError(resp *http.Response) *APIError {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &APIError{Status: resp.StatusCode}
	var j wire.Error
	if json.Unmarshal(raw, &j) == nil && j.Message != "" {
		e.Message, e.Code = j.Message, j.Code
	} else {
		text := strings.TrimSpace(string(raw))
		if len(text) > 200 {
			text = text[:200] + "..."
		}
		e.Message = fmt.Sprintf("server answered %s", resp.Status)
		if text != "" {
			e.Message += ": " + text
		}
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		e.retryAfter = time.Duration(s) * time.Second
	}
	return e
}

func drain(r io.Reader) { _, _ = io.Copy(io.Discard, io.LimitReader(r, 64<<10)) }

// connError is a request that got no answer from the server at base.
type connError struct {
	base string
	err  error
}

func (e *connError) Error() string {
	msg := "server " + e.base + " did not answer: " + e.err.Error()
	if strings.HasPrefix(e.base, "http://") && (errors.Is(e.err, io.EOF) || errors.Is(e.err, io.ErrUnexpectedEOF) || strings.Contains(e.err.Error(), "malformed HTTP response")) {
		// An HTTPS server closes a plain HTTP request so.
		msg += " (if it serves HTTPS, give https://" + strings.TrimPrefix(e.base, "http://") + ")"
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](e.err); ok {
		msg += " (this client does not trust the CA that signed the server's certificate: give that CA with --ca-cert or IPPOOL_CACERT; the Go client takes it in Options.TLS)"
	}
	return msg
}

// isAbsent reports whether err means nothing listens at the address: the
// connection was refused, or the host name is not known.
func isAbsent(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	de, ok := errors.AsType[*net.DNSError](err)
	return ok && de.IsNotFound
}
func (e *connError) Unwrap() error { return e.err }

// isTLSError reports whether err is a TLS handshake refused by this client
// (the server's certificate) or by the server (this client's, or its
// absence).
func isTLSError(err error) bool {
	var oe *net.OpError
	return errors.As(err, new(*tls.CertificateVerificationError)) || (errors.As(err, &oe) && oe.Op == "remote error")
}

// isConnError reports whether err means no answer came back from a server.
func isConnError(err error) bool {
	var ce *connError
	var ue *url.Error
	var oe *net.OpError
	return errors.As(err, &ce) || errors.As(err, &ue) || errors.As(err, &oe)
}

// Token is a token as a server shows it; Secret is set only in the answers
// to BootstrapACL and CreateToken.
type Token = wire.Token

// BootstrapACL turns access control on for the whole cluster and returns the
// first admin token, secret included. It succeeds once per cluster.
func (c *Client) BootstrapACL(ctx context.Context) (Token, error) {
	var t Token
	err := c.call(ctx, http.MethodPost, "/v1/acl/bootstrap", nil, &t)
	return t, err
}

// CreateToken makes a token with the role (read, allocate or admin) and
// returns it, secret included; the cluster keeps only its hash.
func (c *Client) CreateToken(ctx context.Context, role, description string) (Token, error) {
	body, err := json.Marshal(wire.TokenRequest{Role: role, Description: description})
	if err != nil {
		return Token{}, err
	}
	var t Token
	err = c.call(ctx, http.MethodPost, "/v1/acl/tokens", bodyBytes(body), &t)
	return t, err
}

// Tokens lists the cluster's tokens, without secrets.
func (c *Client) Tokens(ctx context.Context) ([]Token, error) {
	var l wire.TokenList
	err := c.call(ctx, http.MethodGet, "/v1/acl/tokens", nil, &l)
	return l.Tokens, err
}

// RevokeToken revokes the token with the accessor on every server.
func (c *Client) RevokeToken(ctx context.Context, accessor string) error {
	return c.call(ctx, http.MethodDelete, path("acl", "tokens", accessor), nil, nil)
}

// ACLSelf says whether access control is on and, if so, which token this
// client uses.
func (c *Client) ACLSelf(ctx context.Context) (wire.ACLSelf, error) {
	var s wire.ACLSelf
	err := c.call(ctx, http.MethodGet, "/v1/acl/self", nil, &s)
	return s, err
}

// Policy is the cluster's policy as GET /v1/policy gives it.
type Policy = wire.Policy

// Policy returns the policy the server holds (Revision 0: none was set).
func (c *Client) Policy(ctx context.Context) (Policy, error) {
	var p Policy
	err := c.call(ctx, http.MethodGet, "/v1/policy", nil, &p)
	return p, err
}

// SetPolicy replaces the policy with the document text (HuJSON) and returns
// its revision and rule count. A document the server refuses comes back as
// an *APIError with code invalid_policy, naming the line and column.
func (c *Client) SetPolicy(ctx context.Context, text []byte) (Policy, error) {
	var p Policy
	err := c.call(ctx, http.MethodPut, "/v1/policy", bodyBytes(text), &p)
	return p, err
}

// SetPolicyAt is SetPolicy only while the policy is at revision (0: none
// set yet); otherwise it fails with code revision_mismatch and changes
// nothing, so that two administrators cannot overwrite each other unseen.
func (c *Client) SetPolicyAt(ctx context.Context, text []byte, revision uint64) (Policy, error) {
	var p Policy
	err := c.call(ctx, http.MethodPut, "/v1/policy?if_revision="+strconv.FormatUint(revision, 10), bodyBytes(text), &p)
	return p, err
}

// TestPolicy asks the server how its policy decides t.
func (c *Client) TestPolicy(ctx context.Context, t wire.PolicyTest) (wire.PolicyDecision, error) {
	body, err := json.Marshal(t)
	if err != nil {
		return wire.PolicyDecision{}, err
	}
	var d wire.PolicyDecision
	err = c.call(ctx, http.MethodPost, "/v1/policy/test", bodyBytes(body), &d)
	return d, err
}
