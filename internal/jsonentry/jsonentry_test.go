package jsonentry

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/ippool/ippool/pool"
)

var kind = Kind{Marker: 'T', Version: 2, Max: 64, Name: "test", TooLarge: pool.CodeInvalidConfig}

type cmd struct {
	Op string `json:"op"`
}

func TestRoundTripAndRefusals(t *testing.T) {
	b, err := kind.Encode(cmd{Op: "x"})
	if err != nil || !kind.Is(b) {
		t.Fatalf("%q %v", b, err)
	}
	var got cmd
	if err := kind.Decode(b, &got); err != nil || got.Op != "x" {
		t.Fatalf("%+v %v", got, err)
	}
	for i := range b {
		d := bytes.Clone(b)
		d[i] ^= 0x20
		if err := kind.Decode(d, &got); err == nil {
			t.Errorf("byte %d flipped: decoded", i)
		} else if i >= 2 && i < len(b)-4 && !errors.Is(err, pool.ErrCorruptEntry) {
			t.Errorf("byte %d of the body flipped: %v, want corrupt_entry", i, err)
		}
	}
	other := Kind{Marker: 'T', Version: 3, Max: 64, Name: "test"}
	if err := other.Decode(b, &got); !errors.Is(err, pool.ErrBadCommand) || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("another version: %v", err)
	}
	if _, err := kind.Encode(cmd{Op: strings.Repeat("y", 64)}); !errors.Is(err, pool.ErrInvalidConfig) {
		t.Errorf("oversized: %v", err)
	}
	extra, _ := Kind{Marker: 'T', Version: 2, Max: 64}.Encode(map[string]string{"op": "x", "more": "y"})
	if err := kind.Decode(extra, &got); !errors.Is(err, pool.ErrBadCommand) {
		t.Errorf("an unknown field: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	b, _ := kind.Encode(cmd{Op: "x"})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		var c cmd
		if kind.Decode(b, &c) == nil {
			again, err := kind.Encode(c)
			if err != nil {
				t.Fatal(err)
			}
			var d cmd
			if err := kind.Decode(again, &d); err != nil || d != c {
				t.Fatalf("%+v does not round-trip: %+v %v", c, d, err)
			}
		}
	})
}
