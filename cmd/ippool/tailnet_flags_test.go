package main

import "testing"

func TestTailnetFlagsGoTogether(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  ServeCmd
		ok   bool
	}{
		{"plain", ServeCmd{}, true},
		{"tag without tailnet", ServeCmd{TailnetFlags: TailnetFlags{ClusterTag: "tag:ippool"}}, false},
		{"tailnet without tag", ServeCmd{TailnetFlags: TailnetFlags{Tailnet: true}}, false},
		{"tailnet", ServeCmd{TailnetFlags: TailnetFlags{Tailnet: true, ClusterTag: "tag:ippool"}}, true},
		{"tailnet and TPROXY", ServeCmd{TailnetFlags: TailnetFlags{Tailnet: true, ClusterTag: "tag:ippool"}, ConnectorFlags: ConnectorFlags{Connector: true}}, false},
		{"tailnet and host DNS", ServeCmd{TailnetFlags: TailnetFlags{Tailnet: true, ClusterTag: "tag:ippool"}, DNSAddr: "127.0.0.1:53"}, false},
		{"tailnet and TLS", ServeCmd{TailnetFlags: TailnetFlags{Tailnet: true, ClusterTag: "tag:ippool"}, TLSCA: "ca.pem"}, false},
		{"tailnet and a v6 prefix in the 4via6 range", ServeCmd{TailnetFlags: TailnetFlags{Tailnet: true, ClusterTag: "tag:ippool"}, V6Prefix: "fd7a:115c:a1e0:b1a::/96"}, false},
		{"tailnet and a v6 prefix outside it", ServeCmd{TailnetFlags: TailnetFlags{Tailnet: true, ClusterTag: "tag:ippool"}, V6Prefix: "fd7a:115c:a1e0:a99c::/96"}, true},
		{"a v6 prefix in the 4via6 range without tailnet", ServeCmd{V6Prefix: "fd7a:115c:a1e0:b1a::/96"}, true},
	} {
		if err := tc.cmd.checkTailnet(); (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
