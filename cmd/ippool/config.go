package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/alecthomas/kong"
)

// serveConfig reads `serve --config FILE`: a JSON object whose keys are
// serve's flag names with underscores ("http_addr", "dns_upstream") and
// whose values are what the flag takes (strings, numbers, booleans, arrays
// for lists). A flag on the command line or its IPPOOL_<NAME> variable wins
// over the file, as etcd's and Consul's flags win over theirs; a key that
// names no flag is an error, so a misspelt setting is not silently ignored.
func serveConfig(r io.Reader) (kong.Resolver, error) {
	values := map[string]any{}
	dec := json.NewDecoder(r)
	dec.UseNumber()
	if err := dec.Decode(&values); err != nil {
		return nil, fmt.Errorf("--config: not a JSON object of settings: %w", err)
	}
	return &configResolver{values: values}, nil
}

type configResolver struct {
	values map[string]any
}

func configKey(flag string) string { return strings.ReplaceAll(flag, "-", "_") }

func (c *configResolver) Validate(app *kong.Application) error {
	known := map[string]bool{}
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		for _, f := range n.Flags {
			known[configKey(f.Name)] = true
		}
		for _, ch := range n.Children {
			walk(ch)
		}
	}
	walk(app.Node)
	var unknown []string
	for k := range c.values {
		if !known[k] || k == "config" {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("--config: %s name%s no flag of serve (keys are flag names with underscores, like http_addr)", strings.Join(unknown, ", "), map[bool]string{true: "s", false: ""}[len(unknown) == 1])
	}
	return nil
}

func (c *configResolver) Resolve(_ *kong.Context, _ *kong.Path, flag *kong.Flag) (any, error) {
	if slices.ContainsFunc(flag.Envs, func(e string) bool { _, set := os.LookupEnv(e); return set }) {
		return nil, nil // the environment wins over the file
	}
	v, ok := c.values[configKey(flag.Name)]
	if !ok {
		return nil, nil
	}
	switch v := v.(type) {
	case []any:
		// A list flag takes its items joined by its separator.
		parts := make([]string, len(v))
		for i, p := range v {
			parts[i] = fmt.Sprint(p)
		}
		return strings.Join(parts, ","), nil
	case json.Number:
		return v.String(), nil
	}
	return v, nil
}
