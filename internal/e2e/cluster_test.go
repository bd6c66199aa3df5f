// Package e2e tests ippool as users run it: the real binary, real processes,
// real sockets, real data dirs.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/ippool/ippool/internal/poll"
	"github.com/ippool/ippool/internal/testcluster"
)

type mapping struct {
	Client string `json:"client"`
	Domain string `json:"domain"`
	IP     string `json:"ip"`
}

// alloc allocates through s and returns the address.
func alloc(ctx context.Context, s *testcluster.Server, client, domain string) (string, error) {
	status, body, err := s.Do(ctx, http.MethodPost, "/v1/clients/"+client+"/domains/"+domain, nil)
	if err != nil {
		return "", err
	}
	if status != 200 {
		return "", fmt.Errorf("%s: %d %s", s.ID, status, body)
	}
	var m mapping
	if err := json.Unmarshal(body, &m); err != nil {
		return "", err
	}
	return m.IP, nil
}

// allocRetry retries an allocation on every running server until it
// succeeds or the deadline passes.
func allocRetry(t *testing.T, c *testcluster.Cluster, client, domain string, within time.Duration) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	var ip string
	var lastErr error
	i := 0
	written := poll.Wait(within, func() bool {
		running := c.Running()
		s := running[i%len(running)]
		i++
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ip, lastErr = alloc(ctx, s, client, domain)
		return lastErr == nil
	})
	if !written {
		t.Fatalf("no write succeeded within %v: %v", within, lastErr)
	}
	return ip, time.Since(start)
}

// lookupLocal asks s for the client's mapping of ip.
func lookup(ctx context.Context, s *testcluster.Server, client, ip string) (string, int, error) {
	status, body, err := s.Do(ctx, http.MethodGet, "/v1/clients/"+client+"/ips/"+ip, nil)
	if err != nil || status != 200 {
		return "", status, err
	}
	var m mapping
	err = json.Unmarshal(body, &m)
	return m.Domain, status, err
}

func TestLeaderKillThenWritesResumeAndRestartCatchesUp(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{})
	ctx := context.Background()
	acked := map[string]string{}
	for i := range 60 {
		s := c.Servers[i%3]
		d := fmt.Sprintf("before%d.example", i)
		ip, err := alloc(ctx, s, "gw", d)
		if err != nil {
			t.Fatal(err)
		}
		acked[d] = ip
	}
	leader := c.Leader()
	if leader == nil {
		t.Fatal("no leader")
	}
	leader.Kill()
	ip, took := allocRetry(t, c, "gw", "after.example", 20*time.Second)
	acked["after.example"] = ip
	t.Logf("first write after SIGKILL of the leader succeeded after %v", took)

	// The killed server restarts from its data dir and catches up.
	leader.Start()
	c.WaitReady(30 * time.Second)
	for d, ip := range acked {
		for _, s := range c.Servers {
			dom, status, err := lookup(ctx, s, "gw", ip)
			if err != nil || dom != d {
				t.Fatalf("%s: %s maps to %q (status %d, %v), want %s", s.ID, ip, dom, status, err, d)
			}
		}
	}
}

func TestFullClusterCrashKeepsAcknowledgedMappings(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{})
	ctx := context.Background()
	acked := map[string]string{}
	for i := range 100 {
		d := fmt.Sprintf("d%d.example", i)
		ip, err := alloc(ctx, c.Servers[i%3], fmt.Sprintf("client-%d", i%5), d)
		if err != nil {
			t.Fatal(err)
		}
		acked[fmt.Sprintf("client-%d/%s", i%5, ip)] = d
	}
	for _, s := range c.Servers {
		s.Kill()
	}
	for _, s := range c.Servers {
		s.Start()
	}
	c.WaitReady(30 * time.Second)
	for key, d := range acked {
		var client, ip string
		fmt.Sscanf(key, "%s", &client)
		for i := range key {
			if key[i] == '/' {
				client, ip = key[:i], key[i+1:]
			}
		}
		s := c.Servers[len(d)%3]
		dom, status, err := lookup(ctx, s, client, ip)
		if err != nil || dom != d {
			t.Fatalf("after a full crash %s: %s %s -> %q (%d, %v), want %s", s.ID, client, ip, dom, status, err, d)
		}
	}
}
