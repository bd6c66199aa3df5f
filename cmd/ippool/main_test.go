package main

import (
	"bytes"
	"errors"
	"testing"

	"github.com/ippool/ippool/client"
	"github.com/ippool/ippool/pool"
)

func TestReport(t *testing.T) {
	notFound := &client.APIError{Status: 404, Code: "not_found", Message: "client a has no mapping for 100.64.0.9"}
	for _, tc := range []struct {
		err    error
		status int
		text   string
	}{
		{errors.New("boom"), 1, "ippool: boom\n"},
		{notFound, 1, "ippool: client a has no mapping for 100.64.0.9 (not_found)\n"},
		{&exitError{status: 2, err: notFound}, 2, "ippool: client a has no mapping for 100.64.0.9 (not_found)\n"},
		{pool.Errorf(pool.CodeBadSnapshot, "snapshot is truncated"), 1, "ippool: snapshot is truncated (bad_snapshot)\n"},
	} {
		var b bytes.Buffer
		if got := report(&b, tc.err); got != tc.status || b.String() != tc.text {
			t.Errorf("report(%v) = %d, %q; want %d, %q", tc.err, got, b.String(), tc.status, tc.text)
		}
	}
}
