package pool

import (
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// MaxClientIDLen bounds client IDs so that a hostile caller cannot grow the
// replicated state with long keys.
const MaxClientIDLen = 128

// ValidateClientID reports whether id is 1 to 128 characters of
// A-Z a-z 0-9 . _ : - (enough for node IDs, IPv4 and IPv6 text, and UUIDs).
func ValidateClientID(id string) error {
	if id == "" {
		return errorf(CodeInvalidClient, "client ID is empty")
	}
	if len(id) > MaxClientIDLen {
		return errorf(CodeInvalidClient, "client ID is %d characters long; at most %d are allowed", len(id), MaxClientIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !isAlnum(c) && c != '.' && c != '_' && c != ':' && c != '-' {
			return errorf(CodeInvalidClient, "client ID %q has %q at position %d; only A-Z a-z 0-9 . _ : - are allowed", id, c, i+1)
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// NormalizeDomain returns the canonical form of a DNS name: lower case and
// without the trailing dot, so "Example.COM." and "example.com" are one
// domain (S8). Names that are not valid DNS names are refused: at most 253
// characters, labels of 1 to 63 characters of letters, digits, '-' and '_'
// (underscore appears in SRV-style and many real-world names), and a label
// may not start or end with '-'.
//
// An internationalised name (bücher.de) is converted to its ASCII form
// (xn--bcher-kva.de) as browsers and resolvers do (IDNA 2008, UTS #46
// lookup), so the API, the CLI and DNS name it alike; only the ASCII form
// is ever stored.
func NormalizeDomain(name string) (string, error) {
	d := strings.TrimSuffix(name, ".")
	if d == "" {
		return "", errorf(CodeInvalidDomain, "domain %q is empty", name)
	}
	if len(d) > 253 {
		return "", errorf(CodeInvalidDomain, "domain is %d characters long; at most 253 are allowed", len(d))
	}
	lower := true
	labelStart := 0
	for i := 0; i <= len(d); i++ {
		if i == len(d) || d[i] == '.' {
			label := d[labelStart:i]
			switch {
			case label == "":
				return "", errorf(CodeInvalidDomain, "domain %q has an empty label", name)
			case len(label) > 63:
				return "", errorf(CodeInvalidDomain, "domain %q has a label of %d characters; at most 63 are allowed", name, len(label))
			case label[0] == '-' || label[len(label)-1] == '-':
				return "", errorf(CodeInvalidDomain, "domain %q has label %q that starts or ends with '-'", name, label)
			}
			labelStart = i + 1
			continue
		}
		c := d[i]
		if c >= utf8.RuneSelf {
			// Converted only when met, so that ASCII names, nearly all,
			// pay no second pass.
			return normalizeIDN(name)
		}
		if 'A' <= c && c <= 'Z' {
			lower = false
			continue
		}
		if !isAlnum(c) && c != '-' && c != '_' {
			return "", errorf(CodeInvalidDomain, "domain %q has %q at position %d; only letters, digits, '-', '_' and '.' are allowed", name, c, i+1)
		}
	}
	if lower {
		// The common case: no copy.
		return d, nil
	}
	return strings.ToLower(d), nil
}

// idnaLookup converts names as a resolver looking them up does.
var idnaLookup = idna.Lookup

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// normalizeIDN converts an internationalised name to its ASCII form and
// checks that as any name.
func normalizeIDN(name string) (string, error) {
	ascii, err := idnaLookup.ToASCII(name)
	if err != nil {
		return "", errorf(CodeInvalidDomain, "domain %q is not a valid internationalised name (%v); give it in its ASCII form (xn--...)", name, err)
	}
	if !isASCII(ascii) {
		return "", errorf(CodeInvalidDomain, "domain %q has no ASCII form; give it as xn--...", name)
	}
	return NormalizeDomain(ascii)
}
