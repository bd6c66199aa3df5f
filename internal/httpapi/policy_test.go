package httpapi

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ippool/ippool/internal/policy"
	"github.com/ippool/ippool/internal/service"
	"github.com/ippool/ippool/wire"
)

const issuePolicy = `{
  // clients grouped by name
  "groups": {"group:eng": ["id:alice-laptop", "cidr:10.1.0.0/16"]},
  "rules": [
    {"name": "no-ssh", "clients": ["*"], "domains": ["*"], "ports": ["tcp:22"], "action": "deny"},
    {"name": "eng-git", "clients": ["group:eng", "tag:eng"], "domains": ["git.corp.example", "*.github.com"], "action": "allow"},
    {"name": "anchor-saas", "clients": ["*"], "domains": ["*.saas.example"], "action": "egress", "egress": ["203.0.113.10", "203.0.113.11"]},
  ],
  "default": "deny",
}`

// The policy endpoints through the server `ippool serve` runs: the
// document is taken as written, refused with its line and column when it
// does not check, changed only at the revision If-Match names, and tested
// against the live policy.
func TestPolicyEndpoints(t *testing.T) {
	svc := startService(t)
	addr := serveFast(t, svc)
	do := func(method, target, ifMatch, body string) (int, http.Header, []byte) {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: %d\r\n", method, target, len(body))
		if ifMatch != "" {
			req += "If-Match: " + ifMatch + "\r\n"
		}
		resp, b := rawExchange(t, c, req+"\r\n"+body)
		return resp.StatusCode, resp.Header, b
	}
	decode := func(b []byte, v any) {
		t.Helper()
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
	}

	status, h, b := do("GET", "/v1/policy", "", "")
	var got wire.Policy
	decode(b, &got)
	if status != 200 || got.Revision != 0 || h.Get("ETag") != `"0"` {
		t.Fatalf("before any policy: %d %s %s", status, h.Get("ETag"), b)
	}
	// No policy: everything is allowed by the default.
	_, _, b = do("POST", "/v1/policy/test", "", `{"client":"bob","domain":"x.example"}`)
	var d wire.PolicyDecision
	decode(b, &d)
	if d.Rule != "default" || d.Action != "allow" {
		t.Fatalf("no policy: %s", b)
	}

	status, _, b = do("PUT", "/v1/policy", `"0"`, issuePolicy)
	decode(b, &got)
	if status != 200 || got.Revision == 0 || got.Rules != 3 {
		t.Fatalf("PUT: %d %s", status, b)
	}
	first := got.Revision
	status, h, b = do("GET", "/v1/policy", "", "")
	decode(b, &got)
	if status != 200 || got.Text != issuePolicy || got.Revision != first || h.Get("ETag") != fmt.Sprintf(`"%d"`, first) {
		t.Fatalf("GET after PUT: %d %s", status, b)
	}

	for _, c := range []struct{ body, rule, action, egress string }{
		{`{"client":"alice-laptop","domain":"git.corp.example","port":443,"proto":"tcp"}`, "eng-git", "allow", ""},
		{`{"client":"alice-laptop","domain":"git.corp.example","port":22}`, "no-ssh", "deny", ""},
		{`{"client":"n1","domain":"git.corp.example","tags":["tag:eng"]}`, "eng-git", "allow", ""},
		{`{"client":"n1","domain":"git.corp.example","addr":"10.1.2.3"}`, "eng-git", "allow", ""},
		{`{"client":"bob","domain":"GIT.corp.example."}`, "default", "deny", ""},
		{`{"client":"bob","domain":"a.saas.example"}`, "anchor-saas", "egress", "203.0.113."},
	} {
		status, _, b := do("POST", "/v1/policy/test", "", c.body)
		var d wire.PolicyDecision
		decode(b, &d)
		if status != 200 || d.Rule != c.rule || d.Action != c.action || !strings.HasPrefix(d.Egress, c.egress) || d.Revision != first {
			t.Errorf("test %s: %d %s, want %s %s", c.body, status, b, c.rule, c.action)
		}
	}

	// A stale If-Match changes nothing; so does an invalid document.
	status, _, b = do("PUT", "/v1/policy", `"0"`, `{}`)
	if status != http.StatusPreconditionFailed || !strings.Contains(string(b), "revision_mismatch") {
		t.Errorf("stale If-Match: %d %s", status, b)
	}
	status, _, b = do("PUT", "/v1/policy", "", "{\n  \"rules\": [\n    {\"name\": \"x\", \"clients\": [\"ip:1\"], \"domains\": [\"*\"], \"action\": \"allow\"}]}")
	if status != http.StatusBadRequest || !strings.Contains(string(b), "invalid_policy") || !strings.Contains(string(b), "line 3, column 31") {
		t.Errorf("invalid document: %d %s", status, b)
	}
	for _, bad := range []string{`{"client":"","domain":"x.example"}`, `{"client":"a","domain":"bad..name"}`, `{"client":"a","domain":"x.example","proto":"sctp","port":1}`, `{"client":"a","domain":"x.example","addr":"nope"}`, `not json`} {
		if status, _, b := do("POST", "/v1/policy/test", "", bad); status != http.StatusBadRequest {
			t.Errorf("test %s: %d %s, want 400", bad, status, b)
		}
	}
	if _, _, b := do("GET", "/v1/policy", "", ""); !strings.Contains(string(b), fmt.Sprintf(`"revision":%d`, first)) {
		t.Errorf("the refused changes changed the policy: %s", b)
	}

	// A document over MaxBody but within the policy's bound is taken.
	var big strings.Builder
	big.WriteString(`{"rules": [`)
	for i := range 1000 {
		fmt.Fprintf(&big, `{"name": "rule-%d", "clients": ["id-prefix:team-%d-"], "domains": ["*.svc%d.corp.example"], "action": "allow"},`, i, i, i)
	}
	big.WriteString(`]}`)
	if big.Len() <= MaxBody {
		t.Fatalf("the big document has only %d bytes", big.Len())
	}
	status, _, b = do("PUT", "/v1/policy", fmt.Sprintf(`"%d"`, first), big.String())
	decode(b, &got)
	if status != 200 || got.Rules != 1000 || got.Revision <= first {
		t.Fatalf("a 1,000-rule document: %d %s", status, b)
	}
}

// rawExchange writes req on c and reads the answer.
func rawExchange(t *testing.T, c net.Conn, req string) (*http.Response, []byte) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// An allocation the policy denies is 403 denied_by_policy naming the rule,
// on the fast path and through the mux alike, and allocates nothing.
func TestAllocationDeniedByPolicy(t *testing.T) {
	svc := startService(t)
	if _, err := svc.SetPolicy(t.Context(), policy.Command{Text: issuePolicy}); err != nil {
		t.Fatal(err)
	}
	addr := serveFast(t, svc)
	for _, c := range []struct {
		client, domain string
		status         int
		rule           string
	}{
		{"alice-laptop", "git.corp.example", 200, ""},
		{"10.1.7.7", "api.github.com", 200, ""},
		{"bob", "x.saas.example", 200, ""},
		{"bob", "git.corp.example", 403, "default is deny"},
		{"10.2.7.7", "api.github.com", 403, "default is deny"},
	} {
		resp, b := rawRequest(t, addr, "POST", "/v1/clients/"+c.client+"/domains/"+c.domain, nil)
		if resp.StatusCode != c.status || (c.status == 403 && (!strings.Contains(string(b), "denied_by_policy") || !strings.Contains(string(b), c.rule))) {
			t.Errorf("%s %s: %d %s, want %d", c.client, c.domain, resp.StatusCode, b, c.status)
		}
		if _, ok := svc.Get(c.client, c.domain); ok != (c.status == 200) {
			t.Errorf("%s %s: mapped %v", c.client, c.domain, ok)
		}
	}
	if _, err := svc.SetPolicy(t.Context(), policy.Command{Text: `{"rules": [{"name": "no-git", "clients": ["*"], "domains": ["git.corp.example"], "action": "deny"}]}`}); err != nil {
		t.Fatal(err)
	}
	resp, b := rawRequest(t, addr, "POST", "/v1/clients/alice-laptop/domains/GIT.corp.example", nil)
	if resp.StatusCode != 403 || !strings.Contains(string(b), `rule \"no-git\"`) {
		t.Errorf("after the change: %d %s", resp.StatusCode, b)
	}
	var got wire.Policy
	if err := json.Unmarshal(mustGet(t, addr, "/v1/policy"), &got); err != nil {
		t.Fatal(err)
	}
	if want := []wire.PolicyRuleHits{{Rule: "no-git", Action: "deny", Hits: 1}, {Rule: "default", Action: "allow"}}; !slices.Equal(got.Hits, want) {
		t.Errorf("hits %+v, want %+v", got.Hits, want)
	}
}

func mustGet(t *testing.T, addr, target string) []byte {
	t.Helper()
	resp, b := rawRequest(t, addr, "GET", target, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", target, resp.StatusCode, b)
	}
	return b
}

// A rule's max_mappings bounds the mappings each client it allows may hold;
// a mapping the client holds already is answered still.
func TestRuleMaxMappings(t *testing.T) {
	svc := startService(t)
	if _, err := svc.SetPolicy(t.Context(), policy.Command{Text: `{"rules": [{"name": "guests", "clients": ["id-prefix:guest-"], "domains": ["*"], "action": "allow", "max_mappings": 2}]}`}); err != nil {
		t.Fatal(err)
	}
	addr := serveFast(t, svc)
	for i, c := range []struct {
		client, domain string
		status         int
	}{
		{"guest-1", "a.example", 200},
		{"guest-1", "b.example", 200},
		{"guest-1", "c.example", 429},
		{"guest-1", "a.example", 200},
		{"staff-1", "c.example", 200},
	} {
		resp, b := rawRequest(t, addr, "POST", "/v1/clients/"+c.client+"/domains/"+c.domain, nil)
		if resp.StatusCode != c.status || (c.status == 429 && !strings.Contains(string(b), "max_mappings 2")) {
			t.Errorf("%d: %s %s: %d %s, want %d", i, c.client, c.domain, resp.StatusCode, b, c.status)
		}
	}
}

// serveFast runs the server `ippool serve` runs over svc on loopback until
// the test ends, and returns its address.
func serveFast(t *testing.T, svc *service.Service) string {
	t.Helper()
	srv := NewServer(svc, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}
