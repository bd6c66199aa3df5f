package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/internal/policy"
	snapshotpkg "github.com/ippool/ippool/internal/snapshot"
	"github.com/ippool/ippool/pool"
)

// Restore replaces the cluster's state with the snapshot of size bytes in
// snapshot, through the leader: Raft installs it at a new index and ships
// it to every follower. The snapshot is read as it is sent (to the leader,
// into Raft's snapshot store), never held in memory whole.
func (n *Node) Restore(ctx context.Context, snapshot io.ReaderAt, size int64) error {
	if !n.IsLeader() {
		return n.onLeader("restore", func(addr string) error {
			return n.rpc.post(ctx, addr, rpcRestore, snapshot, size, &struct{}{})
		})
	}
	return n.restoreLocal(ctx, snapshot, size)
}

// restoreLocal is Restore's leader side. The snapshot is decoded here,
// once: a corrupt one is refused before Raft stores it, and the decoded
// state is what the FSM installs (decodedBody), not a second decoding.
func (n *Node) restoreLocal(ctx context.Context, snapshot io.ReaderAt, size int64) error {
	if !n.IsLeader() {
		return errNotLeader
	}
	hasACL, hasPolicy, err := snapshotpkg.Sections(snapshot, size)
	if err != nil {
		return err
	}
	// A backup from before the ACLs were bootstrapped or a policy was set
	// (or from a cluster without them) keeps the cluster's: restoring an
	// old backup must not turn access control or the policy off.
	var keep bytes.Buffer
	var keepACL *acl.State
	var keepPolicy *policy.Stored
	if !hasACL {
		keepACL = n.ACL()
	}
	if !hasPolicy {
		keepPolicy = n.Policy()
	}
	if err := snapshotpkg.WriteSections(&keep, keepACL, keepPolicy); err != nil {
		return err
	}
	body := func() io.Reader {
		return io.MultiReader(bytes.NewReader(keep.Bytes()), io.NewSectionReader(snapshot, 0, size))
	}
	contents, err := snapshotpkg.Read(body())
	if err != nil {
		return err
	}
	defer n.snaps.forgetDecoded()
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: size + int64(keep.Len())}
	return n.raft.Restore(meta, &decodedBody{Reader: body(), contents: &contents}, timeLeft(ctx, time.Minute))
}

// restoreUpload is the restore RPC's leader side: the snapshot another
// server sends is spooled to a file, and checked and installed from there.
func (n *Node) restoreUpload(ctx context.Context, body io.Reader, declared int64) error {
	if !n.IsLeader() {
		// Before reading what may be gigabytes.
		return errNotLeader
	}
	limit := n.cfg.MaxRestoreBytes
	tooLarge := pool.Errorf(pool.CodeBadSnapshot, "the snapshot exceeds the leader's restore limit of %d bytes (--max-restore-bytes)", limit)
	if declared > limit {
		return tooLarge
	}
	f, err := n.SpoolFile()
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := io.Copy(f, io.LimitReader(body, limit+1))
	if err != nil {
		return fmt.Errorf("receiving the snapshot: %w", err)
	}
	if size > limit {
		return tooLarge
	}
	return n.restoreLocal(ctx, f, size)
}

// SpoolFile returns a new, empty file in the data dir to hold an upload
// (a snapshot to restore) until it is checked and installed: memory should
// not hold gigabytes a client sent. The file is owner-only and has no
// name (it is removed as soon as it is made), so a crash leaves nothing
// behind and closing it frees its space.
func (n *Node) SpoolFile() (*os.File, error) { return unnamedFile(n.cfg.DataDir) }

// unnamedFile makes a file in dir (the temporary directory when "") and
// removes its name at once.
func unnamedFile(dir string) (*os.File, error) {
	f, err := os.CreateTemp(dir, "spool-*")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
