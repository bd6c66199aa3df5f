package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/internal/policy"
	"github.com/ippool/ippool/pool"
)

// The cluster's own requests, other than forwarded writes (forward.go),
// travel as HTTP/1.1 over the mux's RPC connections: servers ask the leader
// for a read index, ask to join, and so on. Only servers holding a certificate from the cluster CA get
// this far when TLS is on.
const (
	rpcInfo      = "/internal/v1/info"
	rpcReadIndex = "/internal/v1/readindex"
	rpcJoin      = "/internal/v1/join"
	rpcStatus    = "/internal/v1/status"
	rpcRestore   = "/internal/v1/restore"
	rpcRemove    = "/internal/v1/remove"
	rpcACL       = "/internal/v1/acl"
	rpcPolicy    = "/internal/v1/policy"

	// maxApplyBody bounds a forwarded command entry.
	maxApplyBody = 16 << 20

	// rpcTimeout bounds reading an RPC's request and writing its answer;
	// the answer waits for at most a few write timeouts (a join).
	rpcTimeout = time.Minute
	// restoreTimeout bounds a restore RPC instead: its body may be
	// gigabytes, and installing it takes a while.
	restoreTimeout = 10 * time.Minute
)

// Info is what a server says of itself to its peers.
type Info struct {
	ID           string `json:"id"`
	Addr         string `json:"addr"`
	Bootstrapped bool   `json:"bootstrapped"`
	LeaderID     string `json:"leader_id,omitempty"`
	LeaderAddr   string `json:"leader_addr,omitempty"`
	// Pool is the cluster's pool, or before there is one this server's
	// flags.
	Pool *pool.Config `json:"pool_config,omitempty"`
	// Peers are the servers it knows of, so that bootstrap discovery spreads
	// even when each server was given only some of the others.
	Peers []Peer `json:"peers,omitempty"`
	// Version and EntryVersions are its release and the log entry versions
	// it reads, and WritesEntryVersion the version it writes as leader;
	// empty before 0.3.0 (docs/upgrading.md).
	Version            string `json:"version,omitempty"`
	EntryVersions      []int  `json:"entry_versions,omitempty"`
	WritesEntryVersion int    `json:"writes_entry_version,omitempty"`
}

// Peer names a server.
type Peer struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

type rpcError struct {
	Code    pool.Code `json:"code"`
	Message string    `json:"error"`
	// Retry tells the forwarder that another attempt may succeed (the
	// target is not, or no longer, the leader).
	Retry bool `json:"retry,omitempty"`
}

type joinRequest struct {
	ID   string       `json:"id"`
	Addr string       `json:"addr"`
	Pool *pool.Config `json:"pool_config,omitempty"`
	// Version and EntryVersions: since 0.3.0.
	Version       string `json:"version,omitempty"`
	EntryVersions []int  `json:"entry_versions,omitempty"`
}

func (n *Node) rpcHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+rpcInfo, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.info())
	})
	mux.HandleFunc("POST "+rpcReadIndex, func(w http.ResponseWriter, r *http.Request) {
		idx, err := n.leaderReadIndex(r.Context())
		if err != nil {
			writeRPCError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]uint64{"index": idx})
	})
	mux.HandleFunc("POST "+rpcJoin, n.handleJoin)
	mux.HandleFunc("POST "+rpcTime, n.handleTime)
	mux.HandleFunc("POST "+rpcRestore, func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		rc.SetReadDeadline(time.Now().Add(restoreTimeout))
		rc.SetWriteDeadline(time.Now().Add(restoreTimeout))
		if err := n.restoreUpload(r.Context(), r.Body, r.ContentLength); err != nil {
			writeRPCError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("POST "+rpcACL, func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, acl.MaxCommand+1))
		var cmd acl.Command
		if err == nil {
			// Decoded here so that only a well-formed command reaches the log.
			cmd, err = acl.DecodeCommand(body)
		}
		if err == nil {
			err = n.applyACLLocal(r.Context(), cmd)
		}
		if err != nil {
			writeRPCError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("POST "+rpcPolicy, func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, policy.MaxCommand+1))
		var cmd policy.Command
		if err == nil {
			cmd, err = policy.DecodeCommand(body)
		}
		var rev uint64
		if err == nil {
			rev, err = n.setPolicyLocal(r.Context(), cmd)
		}
		if err != nil {
			writeRPCError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, policyAnswer{Revision: rev})
	})
	mux.HandleFunc("POST "+rpcRemove, func(w http.ResponseWriter, r *http.Request) {
		var req struct{ ID string }
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<12)).Decode(&req); err != nil {
			writeRPCError(w, pool.Errorf(pool.CodeInvalidConfig, "bad remove request: %v", err))
			return
		}
		if err := n.removeLocal(r.Context(), req.ID); err != nil {
			writeRPCError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("GET "+rpcStatus, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.statusInfo())
	})
	return mux
}

func (n *Node) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req joinRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		// invalid_config is final for the joining server (joinVia): it
		// stops with this message instead of retrying forever.
		writeRPCError(w, pool.Errorf(pool.CodeInvalidConfig, "the join request does not decode: %v", err))
		return
	}
	if req.ID == "" || req.Addr == "" {
		writeRPCError(w, pool.Errorf(pool.CodeInvalidConfig, "a join request needs a server ID and address"))
		return
	}
	if n.raft.State() != raft.Leader {
		writeRPCError(w, errNotLeader)
		return
	}
	if ours, ok := n.PoolConfig(); ok && req.Pool != nil && !ours.Equal(*req.Pool) {
		writeRPCError(w, &pool.Error{Code: pool.CodeInvalidConfig, Msg: fmt.Sprintf(
			"server %s asks to join with %s, but the cluster has %s; start it without --pool, or with the cluster's", req.ID, req.Pool, ours)})
		return
	}
	// Checked last, as it also counts the server in the entry version this
	// leader writes from now on: none it cannot read (quotas.go).
	if err := n.writes.admit(req.ID, req.EntryVersions, req.Version); err != nil {
		writeRPCError(w, err)
		return
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		writeRPCError(w, err)
		return
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == raft.ServerID(req.ID) && s.Address == raft.ServerAddress(req.Addr) {
			writeJSON(w, http.StatusOK, n.info())
			return
		}
		if s.ID == raft.ServerID(req.ID) || s.Address == raft.ServerAddress(req.Addr) {
			// Same ID at a new address, or a new ID at a known address. A
			// server that lost its disk comes back like that, and its old
			// entry is stale: replace it. But if the entry's server still
			// answers, the joiner is a mistake (a copied data dir, a reused
			// ID) or an impostor, and replacing would take a live voter out.
			if n.serverIsLive(r.Context(), s) {
				writeRPCError(w, &pool.Error{Code: pool.CodeInvalidConfig, Msg: fmt.Sprintf(
					"server %s asks to join at %s, which would replace server %s at %s, and %s is live; "+
						"if the replacement is intended, an admin must first run `ippool cluster remove %s`",
					req.ID, req.Addr, s.ID, s.Address, s.ID, s.ID)})
				return
			}
			if err := n.raft.RemoveServer(s.ID, 0, n.cfg.WriteTimeout).Error(); err != nil {
				writeRPCError(w, err)
				return
			}
		}
	}
	if err := n.raft.AddVoter(raft.ServerID(req.ID), raft.ServerAddress(req.Addr), 0, n.cfg.WriteTimeout).Error(); err != nil {
		writeRPCError(w, err)
		return
	}
	n.log.Info("server joined", "id", req.ID, "addr", req.Addr)
	writeJSON(w, http.StatusOK, n.info())
}

// liveProbeTimeout bounds the leader's check that a server it would replace
// on a join still runs.
const liveProbeTimeout = time.Second

// serverIsLive reports whether the server of a configuration entry answers
// at its address under its ID.
func (n *Node) serverIsLive(ctx context.Context, s raft.Server) bool {
	if s.ID == raft.ServerID(n.cfg.ID) {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, liveProbeTimeout)
	defer cancel()
	var inf Info
	err := n.rpc.call(ctx, string(s.Address), rpcInfo, nil, &inf)
	return err == nil && inf.ID == string(s.ID)
}

var errNotLeader = &rpcError{Code: pool.CodeNoLeader, Message: "this server is not the leader", Retry: true}

func (e *rpcError) Error() string { return e.Message }

// Is lets errors.Is(err, pool.ErrNoQuorum) and friends see through an RPC.
func (e *rpcError) Is(target error) bool {
	return (&pool.Error{Code: e.Code, Msg: e.Message}).Is(target)
}

func writeRPCError(w http.ResponseWriter, err error) {
	writeJSON(w, http.StatusConflict, asRPCError(err))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// rpcClient calls other servers over the mux.
type rpcClient struct {
	http *http.Client
}

func newRPCClient(m *mux, peerIdle time.Duration) *rpcClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			timeout := 2 * time.Second
			if dl, ok := ctx.Deadline(); ok {
				timeout = time.Until(dl)
			}
			return m.dial(addr, protoRPC, timeout)
		},
		MaxIdleConnsPerHost: 64,
		// Within a peer's cap per source (Config.MaxConnsPerSource), with
		// room for Raft's and the forwarding stream's connections.
		MaxConnsPerHost: 64,
		// Shorter than a peer's IdleTimeout (if it is this server's), so
		// this end closes an idle connection before the other does and no
		// request meets one the peer just closed.
		IdleConnTimeout: min(time.Minute, peerIdle/2),
	}
	return &rpcClient{http: &http.Client{Transport: tr}}
}

func (c *rpcClient) close() { c.http.CloseIdleConnections() }

// call sends a request to addr and decodes a 200 answer into out. An error
// answer comes back as *rpcError.
func (c *rpcClient) call(ctx context.Context, addr, path string, body []byte, out any) error {
	if body == nil {
		return c.do(ctx, http.MethodGet, addr, path, nil, 0, out)
	}
	return c.do(ctx, http.MethodPost, addr, path, bytes.NewReader(body), int64(len(body)), out)
}

// post sends size bytes from body, streamed rather than held in memory.
func (c *rpcClient) post(ctx context.Context, addr, path string, body io.ReaderAt, size int64, out any) error {
	return c.do(ctx, http.MethodPost, addr, path, io.NewSectionReader(body, 0, size), size, out)
}

func (c *rpcClient) do(ctx context.Context, method, addr, path string, body io.Reader, size int64, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, body)
	if err != nil {
		return err
	}
	if sr, ok := body.(*io.SectionReader); ok {
		req.ContentLength = size
		req.GetBody = func() (io.ReadCloser, error) {
			return io.NopCloser(io.NewSectionReader(sr, 0, size)), nil
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(io.LimitReader(resp.Body, maxApplyBody))
	if resp.StatusCode != http.StatusOK {
		var re rpcError
		if err := dec.Decode(&re); err != nil {
			return fmt.Errorf("%s answered %s", addr, resp.Status)
		}
		return &re
	}
	return dec.Decode(out)
}
