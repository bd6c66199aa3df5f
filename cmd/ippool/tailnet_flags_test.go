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
	} {
		if err := tc.cmd.checkTailnet(); (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
