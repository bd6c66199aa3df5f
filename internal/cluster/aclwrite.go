package cluster

import (
	"context"
	"errors"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/pool"
)

// ACL is the replicated access control state; nil before bootstrap.
func (n *Node) ACL() *acl.State { return n.fsm.acl.Load() }

// ApplyACL commits a change to the tokens through the leader.
func (n *Node) ApplyACL(ctx context.Context, cmd acl.Command) error {
	if n.IsLeader() {
		return n.applyACLLocal(ctx, cmd)
	}
	entry, err := acl.EncodeCommand(cmd)
	if err != nil {
		return err
	}
	return n.callLeader(ctx, rpcACL, entry, "change the tokens")
}

// applyACLLocal appends an ACL command on the leader.
func (n *Node) applyACLLocal(ctx context.Context, cmd acl.Command) error {
	if !n.IsLeader() {
		return pool.Errorf(pool.CodeNoLeader, "changing the tokens must go through the leader")
	}
	entry, err := acl.EncodeCommand(cmd)
	if err != nil {
		return err
	}
	if _, err := n.applyLocal(ctx, entry); err != nil {
		var retry errRetry
		if errors.As(err, &retry) {
			return noQuorum(retry.err)
		}
		return err
	}
	return nil
}
