package cluster

import (
	"context"
	"errors"
	"fmt"

	"github.com/ippool/ippool/internal/policy"
	"github.com/ippool/ippool/pool"
)

// Policy is the replicated policy; nil until one is set.
func (n *Node) Policy() *policy.Stored { return n.fsm.policy.Load() }

// policyAnswer is the policy RPC's answer: the revision the change made.
type policyAnswer struct {
	Revision uint64 `json:"revision"`
}

// SetPolicy commits a new policy through the leader and returns its
// revision. It is refused while any server cannot read the policy's log
// entry: that server would stop at it.
func (n *Node) SetPolicy(ctx context.Context, cmd policy.Command) (uint64, error) {
	entry, err := policy.EncodeCommand(cmd)
	if err != nil {
		return 0, err
	}
	if n.IsLeader() {
		return n.setPolicyLocal(ctx, cmd)
	}
	// Here too, not only on the leader: a leader of an older release
	// has no policy RPC to refuse it with.
	if err := n.RequireEntryVersion(ctx, policy.EntryVersion, "a policy"); err != nil {
		return 0, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.WriteTimeout)
		defer cancel()
	}
	var ans policyAnswer
	err = n.onLeader("change the policy", func(addr string) error {
		return n.rpc.call(ctx, addr, rpcPolicy, entry, &ans)
	})
	return ans.Revision, err
}

// setPolicyLocal appends a policy command on the leader.
func (n *Node) setPolicyLocal(ctx context.Context, cmd policy.Command) (uint64, error) {
	if !n.IsLeader() {
		return 0, pool.Errorf(pool.CodeNoLeader, "changing the policy must go through the leader")
	}
	if err := n.RequireEntryVersion(ctx, policy.EntryVersion, "a policy"); err != nil {
		return 0, err
	}
	entry, err := policy.EncodeCommand(cmd)
	if err != nil {
		return 0, err
	}
	f := n.raft.Apply(entry, timeLeft(ctx, n.cfg.WriteTimeout))
	if _, err := n.applyResult(f); err != nil {
		var retry errRetry
		if errors.As(err, &retry) {
			return 0, noQuorum(retry.err)
		}
		return 0, err
	}
	if p := n.Policy(); p == nil || p.Revision < f.Index() {
		return 0, fmt.Errorf("the policy entry %d was applied, but the policy is at revision %v", f.Index(), p)
	}
	return f.Index(), nil
}
