package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/internal/httpapi"
	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcluster"
	"github.com/ippool/ippool/wire"
)

// accessCase is how the test calls one endpoint, and the role the issue
// gives it. Requests that an allowed caller sends are harmless: they name
// nothing that exists or carry a body that does not parse, so every
// credential can send them in any order.
type accessCase struct {
	role         acl.Role
	method, path string
	body         string
}

// accessCases has one entry per pattern httpapi.Routes lists; a new
// endpoint without an entry here fails the test.
var accessCases = map[string]accessCase{
	"POST /v1/clients/{client}/domains/{domain}":   {acl.RoleAllocate, "POST", "/v1/clients/acl-c1/domains/example.com", ""},
	"GET /v1/clients/{client}/ips/{ip}":            {acl.RoleRead, "GET", "/v1/clients/acl-c1/ips/198.18.0.1", ""},
	"GET /v1/clients/{client}/domains/{domain}":    {acl.RoleRead, "GET", "/v1/clients/acl-c1/domains/example.com", ""},
	"GET /v1/clients/{client}":                     {acl.RoleRead, "GET", "/v1/clients/acl-c1", ""},
	"DELETE /v1/clients/{client}/domains/{domain}": {acl.RoleAdmin, "DELETE", "/v1/clients/acl-none/domains/example.com", ""},
	"DELETE /v1/clients/{client}":                  {acl.RoleAdmin, "DELETE", "/v1/clients/acl-none", ""},
	"GET /v1/cluster":                              {acl.RoleRead, "GET", "/v1/cluster", ""},
	"DELETE /v1/cluster/servers/{id}":              {acl.RoleAdmin, "DELETE", "/v1/cluster/servers/no-such-server", ""},
	"GET /v1/snapshot":                             {acl.RoleAdmin, "GET", "/v1/snapshot", ""},
	"PUT /v1/snapshot":                             {acl.RoleAdmin, "PUT", "/v1/snapshot", "not a snapshot"},
	"GET /v1/pool":                                 {acl.RoleRead, "GET", "/v1/pool", ""},
	"GET /v1/pool/clients":                         {acl.RoleRead, "GET", "/v1/pool/clients", ""},
	"GET /v1/clients/{client}/occupancy":           {acl.RoleRead, "GET", "/v1/clients/acl-c1/occupancy", ""},
	"GET /v1/stats":                                {acl.RoleRead, "GET", "/v1/stats", ""},
	"GET /ui/":                                     {acl.RolePublic, "GET", "/ui/", ""},
	"GET /{$}":                                     {acl.RolePublic, "GET", "/", ""},
	"PUT /v1/pool":                                 {acl.RoleAdmin, "PUT", "/v1/pool", "not json"},
	"POST /v1/pool/dry-run":                        {acl.RoleAdmin, "POST", "/v1/pool/dry-run", "not json"},
	"GET /v1/policy":                               {acl.RoleRead, "GET", "/v1/policy", ""},
	"PUT /v1/policy":                               {acl.RoleAdmin, "PUT", "/v1/policy", "not a policy"},
	"POST /v1/policy/test":                         {acl.RoleRead, "POST", "/v1/policy/test", `{"client":"acl-c1","domain":"example.com"}`},
	"POST /v1/acl/bootstrap":                       {acl.RolePublic, "POST", "/v1/acl/bootstrap", ""},
	"GET /v1/acl/self":                             {acl.RoleRead, "GET", "/v1/acl/self", ""},
	"GET /v1/acl/tokens":                           {acl.RoleAdmin, "GET", "/v1/acl/tokens", ""},
	"POST /v1/acl/tokens":                          {acl.RoleAdmin, "POST", "/v1/acl/tokens", `{"role":"nobody"}`},
	"DELETE /v1/acl/tokens/{accessor}":             {acl.RoleAdmin, "DELETE", "/v1/acl/tokens/0000000000000000", ""},
	"GET /metrics":                                 {acl.RoleRead, "GET", "/metrics", ""},
	"GET /healthz":                                 {acl.RolePublic, "GET", "/healthz", ""},
	"GET /readyz":                                  {acl.RolePublic, "GET", "/readyz", ""},
	"/":                                            {acl.RoleRead, "GET", "/v1/no-such-endpoint", ""},
	"/debug/pprof/":                                {acl.RoleAdmin, "GET", "/debug/pprof/", ""},
	"/debug/pprof/cmdline":                         {acl.RoleAdmin, "GET", "/debug/pprof/cmdline", ""},
	"/debug/pprof/profile":                         {acl.RoleAdmin, "GET", "/debug/pprof/profile?seconds=1", ""},
	"/debug/pprof/symbol":                          {acl.RoleAdmin, "GET", "/debug/pprof/symbol", ""},
	"/debug/pprof/trace":                           {acl.RoleAdmin, "GET", "/debug/pprof/trace?seconds=1", ""},
}

// call sends one request with a bearer token ("" for none) to s.
func call(t *testing.T, s *testcluster.Server, token, method, path, body string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s on %s: %v", method, path, s.ID, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b
}

// newToken creates a token through s with the admin secret.
func newToken(t *testing.T, s *testcluster.Server, admin, role string) wire.Token {
	t.Helper()
	status, body := call(t, s, admin, "POST", "/v1/acl/tokens", `{"role":"`+role+`","description":"e2e `+role+`"}`)
	var tok wire.Token
	if status != 200 || json.Unmarshal(body, &tok) != nil || tok.Secret == "" {
		t.Fatalf("creating a %s token: %d %s", role, status, body)
	}
	return tok
}

// Every endpoint, tried with no token, a wrong one, a revoked one and each
// role, on a three-server cluster whose ACLs are bootstrapped: 401 without a
// valid token, 403 with a role below the endpoint's, anything but those with
// a role at or above it. Tokens are made on one server and used on all.
func TestEveryEndpointEnforcesItsRole(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{FirstIP: 91, Args: []string{"--pprof"}})
	s1 := c.Servers[0]

	status, body := call(t, s1, "", "POST", "/v1/acl/bootstrap", "")
	var root wire.Token
	if status != 200 || json.Unmarshal(body, &root) != nil || root.Role != "admin" || !strings.HasPrefix(root.Secret, "ippool_") {
		t.Fatalf("bootstrap: %d %s", status, body)
	}
	c.SetToken(root.Secret)
	creds := map[string]string{"none": "", "wrong": "ippool_" + strings.Repeat("A", 43)}
	roleOf := map[string]acl.Role{"read": acl.RoleRead, "allocate": acl.RoleAllocate, "admin": acl.RoleAdmin}
	for role := range roleOf {
		creds[role] = newToken(t, c.Servers[1], root.Secret, role).Secret
	}
	gone := newToken(t, s1, root.Secret, "admin")
	if status, body := call(t, c.Servers[2], root.Secret, "DELETE", "/v1/acl/tokens/"+gone.Accessor, ""); status != 200 {
		t.Fatalf("revoke: %d %s", status, body)
	}
	creds["revoked"] = gone.Secret

	// Wait until every server has applied the last token change; from then
	// on each answer below is decided by the same token set everywhere.
	for _, s := range c.Servers {
		pollStatus(t, s, creds["admin"], "GET", "/v1/acl/self", 200)
		pollStatus(t, s, creds["revoked"], "GET", "/v1/acl/self", 401)
	}

	routes := httpapi.Routes(httpapi.Options{Pprof: true})
	if len(routes) != len(accessCases) {
		t.Errorf("httpapi serves %d endpoints, this test knows %d", len(routes), len(accessCases))
	}
	i := 0
	for _, rt := range routes {
		ac, ok := accessCases[rt.Pattern]
		if !ok {
			t.Errorf("endpoint %q has no access case here: add one with the role it should need", rt.Pattern)
			continue
		}
		if rt.Role != ac.role {
			t.Errorf("endpoint %q needs the %s role; this test expects %s", rt.Pattern, rt.Role, ac.role)
		}
		for name, secret := range creds {
			s := c.Servers[i%len(c.Servers)]
			i++
			got, body := call(t, s, secret, ac.method, ac.path, ac.body)
			have, valid := roleOf[name]
			switch {
			case rt.Role == acl.RolePublic:
				if got == 401 || got == 403 {
					t.Errorf("%s %s (public) with %s token on %s: %d %s", ac.method, ac.path, name, s.ID, got, body)
				}
			case !valid:
				if got != 401 {
					t.Errorf("%s %s with %s token on %s: %d %s, want 401", ac.method, ac.path, name, s.ID, got, body)
				}
				if strings.Contains(string(body), "revoked") || strings.Contains(string(body), "exist") {
					t.Errorf("a 401 says whether the token exists: %s", body)
				}
			case have < rt.Role:
				if got != 403 {
					t.Errorf("%s %s with a %s token on %s: %d %s, want 403", ac.method, ac.path, name, s.ID, got, body)
				}
			default:
				if got == 401 || got == 403 || got >= 500 {
					t.Errorf("%s %s with a %s token on %s: %d %s, want it allowed", ac.method, ac.path, name, s.ID, got, body)
				}
			}
		}
	}

	// A token made on one server works on every server; its revocation
	// through another reaches all of them.
	fresh := newToken(t, c.Servers[2], root.Secret, "allocate")
	for _, s := range c.Servers {
		pollStatus(t, s, fresh.Secret, "POST", "/v1/clients/acl-c2/domains/example.org", 200)
	}
	if status, body := call(t, s1, root.Secret, "DELETE", "/v1/acl/tokens/"+fresh.Accessor, ""); status != 200 {
		t.Fatalf("revoke: %d %s", status, body)
	}
	for _, s := range c.Servers {
		pollStatus(t, s, fresh.Secret, "POST", "/v1/clients/acl-c2/domains/example.org", 401)
	}
	// The list shows accessors and never a secret.
	_, list := call(t, c.Servers[1], root.Secret, "GET", "/v1/acl/tokens", "")
	if strings.Contains(string(list), "ippool_") || !strings.Contains(string(list), root.Accessor) {
		t.Fatalf("token list: %s", list)
	}
}

// pollStatus repeats a request until it answers want: a follower applies a
// token change a moment after the leader.
func pollStatus(t *testing.T, s *testcluster.Server, token, method, path string, want int) {
	t.Helper()
	poll.Until(t, 10*time.Second, fmt.Sprintf("%s %s on %s never answered %d", method, path, s.ID, want), func() bool {
		got, _ := call(t, s, token, method, path, "")
		return got == want
	})
}
