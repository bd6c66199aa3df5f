// Package policy is who may reach which domains, on which ports, through
// which egress address: the operator's ordered rules, first match wins,
// compiled into indexes so that a check costs a few hundred nanoseconds and
// no allocation however many rules there are. The package parses, checks
// and evaluates; where the document is stored (the Raft log) and where it is
// enforced (DNS, the HTTP API, the connector) is for its callers.
package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tailscale/hujson"
)

// Document is a policy as written: HuJSON (JSON with comments and trailing
// commas, as Tailscale's policy files are). docs/policy.md is its schema.
type Document struct {
	// Groups name lists of client selectors; a rule's clients may say
	// group:NAME for all of them. A group may not hold another group.
	Groups map[string][]string `json:"groups,omitempty"`
	Rules  []Rule              `json:"rules"`
	// Default is the action when no rule matches: allow (also when empty)
	// or deny.
	Default string `json:"default,omitempty"`
}

// Rule is one line of the policy.
type Rule struct {
	Name string `json:"name"`
	// Clients are selectors: *, id:NAME, id-prefix:PREFIX, cidr:PREFIX,
	// group:NAME, tag:NAME, user:LOGIN.
	Clients []string `json:"clients"`
	// Domains are names, *.SUFFIX (every name under SUFFIX, not SUFFIX
	// itself) or * (every name).
	Domains []string `json:"domains"`
	// Ports, for the connector: *, tcp:22, udp:53, tcp:8000-8999. None
	// is every port.
	Ports  []string `json:"ports,omitempty"`
	Action string   `json:"action"`
	// Egress are the local source addresses flows of an egress rule are
	// dialled from, one chosen per client and domain.
	Egress []string `json:"egress,omitempty"`
	// MaxMappings bounds the mappings each matching client may hold; 0
	// is no bound of this rule's.
	MaxMappings int `json:"max_mappings,omitempty"`
}

// Limits of a document, so that what an administrator stores stays small
// enough to check at line rate on every server.
const (
	MaxRules     = 4096
	MaxSelectors = 1 << 16 // client selectors, domains and ports, all rules and groups together
	MaxBytes     = 1 << 20
)

// SyntaxError is a document refused, with where: 1-based line and column
// of the offending value in the text as given.
type SyntaxError struct {
	Line, Column int
	Msg          string
}

func (e *SyntaxError) Error() string {
	if e.Line == 0 {
		return "policy: " + e.Msg
	}
	return fmt.Sprintf("policy: line %d, column %d: %s", e.Line, e.Column, e.Msg)
}

// Parse reads and checks a HuJSON document and compiles it. Every error is
// a *SyntaxError naming the line and column where it can.
func Parse(text []byte) (*Policy, error) {
	doc, err := ParseDocument(text)
	if err != nil {
		return nil, err
	}
	p, err := Compile(doc)
	if err != nil {
		var fe *fieldError
		if errors.As(err, &fe) {
			return nil, locate(text, fe)
		}
		return nil, &SyntaxError{Msg: err.Error()}
	}
	return p, nil
}

// ParseDocument reads a HuJSON document without checking what it says.
func ParseDocument(text []byte) (Document, error) {
	var doc Document
	if len(text) > MaxBytes {
		return doc, &SyntaxError{Msg: fmt.Sprintf("the document has %d bytes; at most %d are allowed", len(text), MaxBytes)}
	}
	v, err := hujson.Parse(text)
	if err != nil {
		return doc, syntaxErrorFrom(text, err)
	}
	v.Standardize()
	// Standardize replaces comments and trailing commas with spaces, so
	// offsets in the standard form are offsets in the text as given.
	std := v.Pack()
	dec := json.NewDecoder(bytes.NewReader(std))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return doc, decodeError(std, dec, err)
	}
	if dec.More() {
		return doc, &SyntaxError{Msg: "more than one JSON value"}
	}
	return doc, nil
}

// syntaxErrorFrom turns hujson's error, which says "line:column" or an
// offset, into a SyntaxError.
func syntaxErrorFrom(text []byte, err error) error {
	msg := err.Error()
	// hujson: "hujson: line 3, column 5: invalid character ..."
	var line, col int
	if i := strings.Index(msg, "line "); i >= 0 {
		if _, e := fmt.Sscanf(msg[i:], "line %d, column %d:", &line, &col); e == nil {
			if j := strings.Index(msg[i:], ": "); j >= 0 {
				return &SyntaxError{Line: line, Column: col, Msg: msg[i+j+2:]}
			}
		}
	}
	return &SyntaxError{Msg: strings.TrimPrefix(msg, "hujson: ")}
}

func decodeError(std []byte, dec *json.Decoder, err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		line, col := lineColumn(std, int(te.Offset))
		field := te.Field
		if field == "" {
			field = "the document"
		}
		return &SyntaxError{Line: line, Column: col, Msg: fmt.Sprintf("%s: a JSON %s where %s belongs", field, te.Value, typeName(te.Type.String()))}
	case errors.As(err, &se):
		line, col := lineColumn(std, int(se.Offset))
		return &SyntaxError{Line: line, Column: col, Msg: se.Error()}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name, _ := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
		// The decoder stops after the field's value; the key is before it.
		off := int(dec.InputOffset())
		if i := bytes.LastIndex(std[:min(off, len(std))], []byte(strconv.Quote(name))); i >= 0 {
			off = i
		}
		line, col := lineColumn(std, off)
		return &SyntaxError{Line: line, Column: col, Msg: fmt.Sprintf("unknown field %q (a document has groups, rules and default; a rule has name, clients, domains, ports, action, egress and max_mappings)", name)}
	}
	return &SyntaxError{Msg: err.Error()}
}

func typeName(t string) string {
	switch t {
	case "string":
		return "a string"
	case "[]string":
		return "a list of strings"
	case "int":
		return "a whole number"
	case "[]policy.Rule":
		return "a list of rules"
	case "policy.Rule":
		return "a rule (an object)"
	case "map[string][]string":
		return "an object of groups"
	}
	return t
}

// lineColumn is the 1-based line and column (in bytes) of offset in text.
func lineColumn(text []byte, offset int) (int, int) {
	offset = min(max(offset, 0), len(text))
	before := text[:offset]
	line := bytes.Count(before, []byte("\n")) + 1
	col := offset - (bytes.LastIndexByte(before, '\n') + 1) + 1
	return line, col
}

// fieldError is a value Compile refused, by its JSON pointer in the
// document, so that Parse can say where it was written.
type fieldError struct {
	pointer string // e.g. /rules/2/clients/0
	msg     string
}

func (e *fieldError) Error() string { return e.pointer + ": " + e.msg }

func fieldErr(msg string, path ...any) error {
	var b strings.Builder
	for _, p := range path {
		b.WriteByte('/')
		switch v := p.(type) {
		case string:
			b.WriteString(strings.ReplaceAll(strings.ReplaceAll(v, "~", "~0"), "/", "~1"))
		case int:
			b.WriteString(strconv.Itoa(v))
		}
	}
	return &fieldError{pointer: b.String(), msg: msg}
}

// locate finds where a refused value was written.
func locate(text []byte, fe *fieldError) error {
	v, err := hujson.Parse(text)
	if err != nil {
		return &SyntaxError{Msg: fe.Error()}
	}
	// A missing field is reported where the object that lacks it starts.
	for ptr := fe.pointer; ; {
		if found := v.Find(ptr); found != nil {
			line, col := lineColumn(text, found.StartOffset)
			return &SyntaxError{Line: line, Column: col, Msg: fe.msg}
		}
		i := strings.LastIndexByte(ptr, '/')
		if i < 0 {
			return &SyntaxError{Msg: fe.pointer + ": " + fe.msg}
		}
		ptr = ptr[:i]
	}
}

// Format is the document as canonical, indented JSON: what GET returns
// when the text as stored is not wanted.
func (d Document) Format() []byte {
	b, _ := json.MarshalIndent(d, "", "  ")
	return append(b, '\n')
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return a, fmt.Errorf("%q is not an IP address", s)
	}
	return a.Unmap(), nil
}
