package server

import (
	"strings"
	"testing"

	"github.com/ippool/ippool/internal/connector"
)

// A connector without a resolver is refused before anything starts.
func TestRunRefusesAConnectorWithoutDNS(t *testing.T) {
	err := Run(t.Context(), Config{Connector: &connector.Config{}})
	if err == nil || !strings.Contains(err.Error(), "give Config.DNS") {
		t.Fatalf("Run: %v", err)
	}
}
