package service

import (
	"context"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ippool/ippool/internal/policy"
	"github.com/ippool/ippool/pool"
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
	s.identify(c)
	if proto == 0 {
		return p.Policy.CheckName(c, domain), p.Revision
	}
	return p.Policy.CheckFlow(c, domain, proto, port), p.Revision
}

// CheckName decides whether c may have an address for domain (normal
// form), as DNS and allocation ask: nil when the policy allows it (or there
// is none), else a denied_by_policy error naming the rule. The decision is
// counted in the rule's hits.
func (s *Service) CheckName(c *policy.Client, domain string) error {
	st := s.node.Policy()
	if st == nil {
		return nil
	}
	s.identify(c)
	d := st.Policy.CheckName(c, domain)
	st.Policy.Count(d)
	if !d.Allowed() {
		return deniedError(d, c, domain)
	}
	if max := d.MaxMappings(); max > 0 {
		return s.ruleQuota(d, c.ID, domain, max)
	}
	return nil
}

// ruleQuota refuses a new mapping past the max_mappings of the rule that
// allowed it. The server that takes the request checks its own state, not
// the log, so allocations through several servers at once may pass it by
// a few; the cluster's --max-mappings-per-client holds at apply.
func (s *Service) ruleQuota(d policy.Decision, client, domain string, max int) error {
	var err error
	s.node.Read(func(st *pool.State) {
		if _, ok := st.Get(client, domain); ok {
			return
		}
		if _, total, _ := st.MappingsPage(client, netip.Addr{}, 0, 0); total >= max {
			err = pool.Errorf(pool.CodeQuotaExceeded, "client %q holds %d mappings, the most the policy's rule %q allows it (max_mappings %d); release some or let them expire", client, total, d.RuleName(), max)
		}
	})
	return err
}

// CheckFlow is the policy's decision on a flow from c to domain's port:
// the connector's check. Without a policy, everything is allowed.
func (s *Service) CheckFlow(c *policy.Client, domain string, proto policy.Proto, port uint16) policy.Decision {
	st := s.node.Policy()
	if st == nil {
		return policy.Decision{Rule: -1, Action: policy.Allow}
	}
	s.identify(c)
	d := st.Policy.CheckFlow(c, domain, proto, port)
	st.Policy.Count(d)
	return d
}

// identify adds the client's tailnet tags and login when the caller did
// not know them.
func (s *Service) identify(c *policy.Client) {
	if s.opts.Identities != nil && c.Tags == nil && c.User == "" {
		c.Tags, c.User = s.opts.Identities(c.ID)
	}
}

func deniedError(d policy.Decision, c *policy.Client, domain string) error {
	if d.Rule < 0 {
		return pool.Errorf(pool.CodeDeniedByPolicy, "the policy denies client %q the domain %q: no rule allows it, and its default is deny", c.ID, domain)
	}
	return pool.Errorf(pool.CodeDeniedByPolicy, "the policy's rule %q denies client %q the domain %q", d.RuleName(), c.ID, domain)
}

// RegisterPolicyMetrics exports the policy's revision and each rule's
// decisions since the policy was set (a new revision starts them again,
// which Prometheus reads as a counter reset). A document has at most
// policy.MaxRules rules, which bounds the series.
func RegisterPolicyMetrics(reg prometheus.Registerer, svc *Service) {
	reg.MustRegister(policyCollector{svc})
}

var (
	policyRevisionDesc = prometheus.NewDesc("ippool_policy_revision", "The revision of the policy this server enforces (0: none set).", nil, nil)
	policyHitsDesc     = prometheus.NewDesc("ippool_policy_rule_hits_total", "Checks each policy rule decided (rule \"default\": no rule matched), since the policy's revision was set.", []string{"rule", "action"}, nil)
)

type policyCollector struct{ svc *Service }

func (c policyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- policyRevisionDesc
	ch <- policyHitsDesc
}

func (c policyCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.svc.node.Policy()
	if st == nil {
		ch <- prometheus.MustNewConstMetric(policyRevisionDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(policyRevisionDesc, prometheus.GaugeValue, float64(st.Revision))
	doc := st.Policy.Document()
	for i, h := range st.Policy.Hits() {
		action := doc.Default
		if i < len(doc.Rules) {
			action = doc.Rules[i].Action
		} else if action == "" {
			action = "allow"
		}
		ch <- prometheus.MustNewConstMetric(policyHitsDesc, prometheus.CounterValue, float64(h.Hits), h.Name, action)
	}
}

// EgressAddrs are the policy's egress addresses, every rule's, for the
// connector to check it has them.
func (s *Service) EgressAddrs() []netip.Addr {
	st := s.node.Policy()
	if st == nil {
		return nil
	}
	var out []netip.Addr
	for _, r := range st.Policy.Document().Rules {
		for _, e := range r.Egress {
			if a, err := netip.ParseAddr(e); err == nil {
				out = append(out, a.Unmap())
			}
		}
	}
	return out
}
