package tailnet

import "testing"

func TestPeerAllows(t *testing.T) {
	p := Peer{StableID: "nABC123", Name: "laptop", FQDN: "laptop.tail-scale.ts.net", Tags: []string{"tag:ops"}}
	for _, tc := range []struct {
		entries []string
		want    bool
	}{
		{[]string{"tag:ops"}, true},
		{[]string{"tag:other", "LAPTOP"}, true},
		{[]string{"laptop.tail-scale.ts.net."}, true},
		{[]string{"nABC123"}, true},
		{[]string{"tag:other", "desktop"}, false},
		{[]string{"ops"}, false}, // a tag is named with its prefix
		{nil, false},
	} {
		if got := p.Allows(tc.entries); got != tc.want {
			t.Errorf("Allows(%q) = %v, want %v", tc.entries, got, tc.want)
		}
	}
}

func TestCheckTag(t *testing.T) {
	for tag, ok := range map[string]bool{"tag:ippool": true, "ippool": false, "tag:": false, "tag:a b": false, "": false} {
		if err := CheckTag(tag); (err == nil) != ok {
			t.Errorf("CheckTag(%q) = %v", tag, err)
		}
	}
}
