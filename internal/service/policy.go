package service

import (
	"context"

	"github.com/ippool/ippool/internal/policy"
)

// Policy is the replicated policy as this server holds it; nil before one
// is set.
func (s *Service) Policy() *policy.Stored { return s.node.Policy() }

// SetPolicy commits a new policy through the leader and returns its
// revision.
func (s *Service) SetPolicy(ctx context.Context, cmd policy.Command) (uint64, error) {
	if err := s.admit(ctx); err != nil {
		return 0, err
	}
	return s.node.SetPolicy(ctx, cmd)
}

// TestPolicy decides c's request against the policy this server holds: a
// name when proto is 0, else a flow to port. Without a policy, everything
// is allowed by the default.
func (s *Service) TestPolicy(c *policy.Client, domain string, proto policy.Proto, port uint16) (policy.Decision, uint64) {
	p := s.node.Policy()
	if p == nil {
		return policy.Decision{Rule: -1, Action: policy.Allow}, 0
	}
	if proto == 0 {
		return p.Policy.CheckName(c, domain), p.Revision
	}
	return p.Policy.CheckFlow(c, domain, proto, port), p.Revision
}
