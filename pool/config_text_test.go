package pool

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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

// A configuration an operator gives is held to the limits of CheckNew;
// Validate, which stored configurations meet, is not.
func TestNewConfigurationLimits(t *testing.T) {
	for _, tc := range []struct {
		pool, exclude string
		lifetime      time.Duration
	}{
		{"127.0.0.0/8", "", time.Hour},
		{"0.0.0.0/24", "", time.Hour},
		{"224.0.0.0/4", "", time.Hour},
		{"255.255.255.0/24", "", time.Hour},
		{"169.254.0.0/16", "", time.Hour},
		{"10.0.0.0/16", "", time.Nanosecond},
		{"126.0.0.0/7", "", time.Hour}, // reaches into 127/8
	} {
		c, err := ParseConfig(tc.pool, tc.exclude, tc.lifetime)
		if err != nil {
			t.Fatalf("%s: stored-form validation refused it: %v", tc.pool, err)
		}
		if err := c.CheckNew(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s lifetime %v: CheckNew = %v, want invalid_config", tc.pool, tc.lifetime, err)
		}
	}
	ok, _ := ParseConfig("126.0.0.0/7", "127.0.0.0/8", time.Second)
	if err := ok.CheckNew(); err != nil {
		t.Errorf("a pool whose reserved part is excluded: %v", err)
	}
	// More ranges than a log entry may carry are refused before anything
	// is proposed.
	var many []string
	for i := range maxRanges + 1 {
		many = append(many, fmt.Sprintf("10.%d.%d.1", i/256, i%256))
	}
	if _, err := ParseConfig("10.0.0.0/8", strings.Join(many, ","), time.Hour); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("%d exclude ranges: %v, want invalid_config", len(many), err)
	}
}
