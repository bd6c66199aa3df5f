package wire

import (
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The bytes servers sent before these types existed, when some answers were
// maps: clients and scripts in the field read exactly these.
func TestBytes(t *testing.T) {
	used := time.Date(2025, 1, 2, 3, 4, 5, 120000000, time.UTC)
	ip := netip.MustParseAddr("100.64.0.1")
	n := 3
	for _, c := range []struct {
		v    any
		want string
	}{
		{Mapping{Client: "c", Domain: "a.example", IP: ip}, `{"client":"c","domain":"a.example","ip":"100.64.0.1"}`},
		{Mapping{Client: "c", Domain: "a.example", IP: ip, LastUsed: used}, `{"client":"c","domain":"a.example","ip":"100.64.0.1","last_used":"2025-01-02T03:04:05.12Z"}`},
		{List{Client: "c", Mappings: []Mapping{{Domain: "a.example", IP: ip, LastUsed: used}}}, `{"client":"c","mappings":[{"domain":"a.example","ip":"100.64.0.1","last_used":"2025-01-02T03:04:05.12Z"}]}`},
		{List{Client: "c", Mappings: []Mapping{}}, `{"client":"c","mappings":[]}`},
		{List{Client: "c", Mappings: []Mapping{}, Total: &n, Offset: new(0)}, `{"client":"c","mappings":[],"total":3,"offset":0}`},
		{Stats{Server: "s1", Time: used, PoolSize: 4, Clients: 1, Mappings: 2, Domains: 2, HeldAddresses: 1, LocalReads: true, Counters: map[string]float64{"lookups": 7, "allocations": 2}},
			`{"server":"s1","time":"2025-01-02T03:04:05.12Z","pool_size":4,"clients":1,"mappings":2,"domains":2,"held_addresses":1,"local_reads":true,"counters":{"allocations":2,"lookups":7}}`},
		{ClientRanking{PoolSize: 4, Total: 9, Offset: 2, Clients: []ClientUsage{{Client: "c", Mappings: 3, Expired: 1, Held: 1}}},
			`{"pool_size":4,"total":9,"offset":2,"clients":[{"client":"c","mappings":3,"expired":1,"held":1}]}`},
		{Occupancy{Client: "c", PoolSize: 5, Block: 2, Cells: 3, Used: [][4]int{{1, 1, 0, 1}}, Ranges: []AddrRange{{ip, ip.Next()}}},
			`{"client":"c","pool_size":5,"block":2,"cells":3,"used":[[1,1,0,1]],"ranges":[{"from":"100.64.0.1","to":"100.64.0.2"}]}`},
		{Release{Client: "c", Domain: "a.example", Released: true}, `{"client":"c","domain":"a.example","released":true}`},
		{ReleaseClient{Client: "c", Released: 2}, `{"client":"c","released":2}`},
		{Error{Code: "not_found", Message: "no <mapping>"}, `{"code":"not_found","error":"no \u003cmapping\u003e"}`},
		{Pool{Pool: "10.0.0.0/8", Lifetime: 48 * time.Hour, ReuseHold: "5s", StaleBound: "2s"}, `{"pool":"10.0.0.0/8","exclude":"","lifetime":"48h0m0s","reuse_hold":"5s","stale_bound":"2s"}`},
		{Pool{Pool: "10.0.0.0/8", Exclude: "10.0.0.1", Lifetime: time.Hour, Released: &n}, `{"pool":"10.0.0.0/8","exclude":"10.0.0.1","lifetime":"1h0m0s","released":3}`},
		{Status{ID: "s1", Servers: []ServerStatus{{ID: "s2", Error: "down"}}},
			`{"id":"s1","addr":"","state":"","leader_id":"","leader_addr":"","term":0,"commit_index":0,"applied_index":0,"last_index":0,"stale_bound":"","reuse_hold":"","local_reads":false,"held_addresses":0,"quotas_enforced":false,"servers":[{"id":"s2","addr":"","voter":false,"role":"","reachable":false,"error":"down"}]}`},
	} {
		b, err := json.Marshal(c.v)
		if err != nil || string(b) != c.want {
			t.Errorf("Marshal(%+v) = %s, %v\nwant %s", c.v, b, err, c.want)
		}
	}
}

func TestPoolLifetime(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
	}{
		{`{"lifetime":"48h0m0s"}`, 48 * time.Hour},
		{`{"lifetime":3600000000000}`, time.Hour},
		{`{"lifetime":""}`, 0},
		{`{"lifetime":null}`, 0},
		{`{}`, 0},
	} {
		var p Pool
		if err := json.Unmarshal([]byte(c.in), &p); err != nil || p.Lifetime != c.want {
			t.Errorf("Unmarshal(%s) = %v, %v; want %v", c.in, p.Lifetime, err, c.want)
		}
	}
	for _, in := range []string{`{"lifetime":"soon"}`, `{"lifetime":true}`, `{"lifetime":1.5}`} {
		var p Pool
		if err := json.Unmarshal([]byte(in), &p); err == nil {
			t.Errorf("Unmarshal(%s) accepted %v", in, p.Lifetime)
		}
	}
	// A newer server's answer stays readable.
	var p Pool
	if err := json.Unmarshal([]byte(`{"pool":"10.0.0.0/8","lifetime":"1h","new_field":1}`), &p); err != nil || p.Pool != "10.0.0.0/8" {
		t.Errorf("unknown field: %+v, %v", p, err)
	}

	n := 7
	in := Pool{Pool: "10.0.0.0/8", Exclude: "10.0.0.1", Lifetime: 90 * time.Minute, Released: &n, ReuseHold: "5s", StaleBound: "2s"}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Pool
	if err := json.Unmarshal(b, &out); err != nil || out.Lifetime != in.Lifetime || out.Released == nil || *out.Released != n ||
		out.Pool != in.Pool || out.Exclude != in.Exclude || out.ReuseHold != in.ReuseHold || out.StaleBound != in.StaleBound {
		t.Fatalf("round trip of %s = %+v, %v", b, out, err)
	}
}

func TestDecodePoolRequest(t *testing.T) {
	const dflt = 48 * time.Hour
	for _, c := range []struct {
		in       string
		lifetime time.Duration
	}{
		{`{"pool":"10.0.0.0/8"}`, dflt},
		{`{"pool":"10.0.0.0/8","lifetime":""}`, dflt},
		{`{"pool":"10.0.0.0/8","lifetime":null}`, dflt},
		{`{"pool":"10.0.0.0/8","lifetime":"1h"}`, time.Hour},
		// Zero is not "left out": the pool's validation refuses it.
		{`{"pool":"10.0.0.0/8","lifetime":"0s"}`, 0},
		// What a GET answers can be sent back.
		{`{"pool":"10.0.0.0/8","exclude":"","lifetime":"1h0m0s","released":1,"reuse_hold":"5s","stale_bound":"2s"}`, time.Hour},
	} {
		p, err := DecodePoolRequest(strings.NewReader(c.in), dflt)
		if err != nil || p.Pool != "10.0.0.0/8" || p.Lifetime != c.lifetime {
			t.Errorf("DecodePoolRequest(%s) = %+v, %v; want lifetime %v", c.in, p, err, c.lifetime)
		}
	}
	for _, c := range []struct {
		in       string
		lifetime bool
	}{
		{`{"pool":"10.0.0.0/8","exlude":"10.0.0.1"}`, false},
		{`{"pool":"10.0.0.0/8","lifetime":48}`, false},
		{`{"pool":`, false},
		{`{"pool":"10.0.0.0/8","lifetime":"soon"}`, true},
	} {
		_, err := DecodePoolRequest(strings.NewReader(c.in), dflt)
		var le *LifetimeError
		if err == nil || errors.As(err, &le) != c.lifetime {
			t.Errorf("DecodePoolRequest(%s) = %v; want an error, *LifetimeError %v", c.in, err, c.lifetime)
		}
	}
}

// FuzzDecodePoolRequest: a PUT /v1/pool body is refused or read into a
// Pool that, sent back as JSON, decodes to the same Pool.
func FuzzDecodePoolRequest(f *testing.F) {
	f.Add([]byte(`{"pool":"198.18.0.0/15","exclude":"","lifetime":"48h"}`))
	f.Add([]byte(`{"pool":"10.0.0.0/8","lifetime":""}`))
	f.Add([]byte(`{"pool":"10.0.0.0/8","lifetime":48}`))
	f.Add([]byte(`{"pool":"10.0.0.0/8","lifetime":"0s","reuse_hold":"5s","released":3}`))
	f.Add([]byte(`{"pool":"10.0.0.0/8","exclde":"10.0.0.1"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := DecodePoolRequest(strings.NewReader(string(body)), time.Hour)
		if err != nil {
			return
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("%+v does not encode: %v", p, err)
		}
		again, err := DecodePoolRequest(strings.NewReader(string(b)), time.Minute)
		if err != nil || !reflect.DeepEqual(again, p) {
			t.Fatalf("%s decoded as %+v, written as %s, read back as %+v, %v", body, p, b, again, err)
		}
	})
}
