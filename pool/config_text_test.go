package pool

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestConfigTextRoundTrip(t *testing.T) {
	for _, tc := range []struct{ pool, exclude string }{
		{"10.0.0.0/16", ""},
		{"10.0.0.1-10.0.0.99,10.1.0.0/24", "10.0.0.7,10.1.0.128/25"},
		{"198.18.0.0/15", "198.18.0.0"},
	} {
		c, err := ParseConfig(tc.pool, tc.exclude, 90*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(struct{ C Config }{c})
		if err != nil {
			t.Fatal(err)
		}
		var back struct{ C Config }
		if err := json.Unmarshal(b, &back); err != nil || !back.C.Equal(c) {
			t.Fatalf("%s: round trip gave %v (%v), want %v", b, back.C, err, c)
		}
	}
}

func TestConfigTextRefusesWhatDoesNotParse(t *testing.T) {
	for _, text := range []string{
		"", "pool", "pool 10.0.0.0/16", "pool 10.0.0.0/16 lifetime", "pool 10.0.0.0/16 lifetime forever",
		"pool 10.0.0.0/33 lifetime 1h", "pool 10.0.0.0/16 lifetime -1h", "pool 10.0.0.0/16 include 10.0.0.1 lifetime 1h",
		"lifetime 1h pool 10.0.0.0/16", "pool 10.0.0.0/16 exclude 10.0.0.0/16 lifetime 1h", "pool ::1/128 lifetime 1h",
	} {
		var c Config
		if err := c.UnmarshalText([]byte(text)); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%q: %v, want invalid_config", text, err)
		}
	}
}
