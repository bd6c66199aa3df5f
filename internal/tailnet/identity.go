package tailnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ippool/ippool/internal/clientid"
)

// whoIsTimeout bounds one question to the node's own backend; it answers
// from its network map, in memory.
const whoIsTimeout = 5 * time.Second

// Peer is who a tailnet address belongs to.
type Peer struct {
	// StableID is the node's stable ID, which outlives its addresses.
	StableID string
	// Name is the node's host name; FQDN its MagicDNS name.
	Name, FQDN string
	// Tags are the node's ACL tags; a tagged node has no user.
	Tags []string
	// User is the login of the node's user, "" for a tagged node.
	User string
}

// WhoIs names the node at a tailnet address.
func (n *Node) WhoIs(ctx context.Context, addr netip.Addr) (Peer, error) {
	ctx, cancel := context.WithTimeout(ctx, whoIsTimeout)
	defer cancel()
	who, err := n.lc.WhoIs(ctx, addr.String())
	if err != nil {
		return Peer{}, fmt.Errorf("tailnet: no node at %v: %w", addr, err)
	}
	if who.Node == nil {
		return Peer{}, fmt.Errorf("tailnet: no node at %v", addr)
	}
	nd := who.Node
	p := Peer{StableID: string(nd.StableID), FQDN: strings.TrimSuffix(nd.Name, "."), Tags: nd.Tags}
	if nd.Hostinfo.Valid() {
		p.Name = nd.Hostinfo.Hostname()
	}
	if p.Name == "" {
		p.Name, _, _ = strings.Cut(p.FQDN, ".")
	}
	if len(p.Tags) == 0 && who.UserProfile != nil {
		p.User = who.UserProfile.LoginName
	}
	if p.StableID != "" {
		n.identities.put(p.StableID, identity{tags: p.Tags, user: p.User})
	}
	return p, nil
}

// Identity is the tags and user login of the client with the stable ID, as
// WhoIs last found them, for the policy's tag: and user: selectors. Every
// query and flow names its client through WhoIs first, so a client that
// asks has an entry.
func (n *Node) Identity(client string) (tags []string, user string) {
	id, _ := n.identities.get(client)
	return id.tags, id.user
}

type identity struct {
	tags []string
	user string
}

// identityCache is bounded: past maxIdentities it starts again empty,
// which costs only WhoIs calls to fill it again.
type identityCache struct {
	mu sync.RWMutex
	m  map[string]identity
}

const maxIdentities = 1 << 16

func (c *identityCache) put(id string, v identity) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxIdentities {
		c.m = make(map[string]identity)
	}
	c.m[id] = v
}

func (c *identityCache) get(id string) (identity, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	v, ok := c.m[id]
	return v, ok
}

func (n *Node) whoIsRemote(remote net.Addr) (Peer, error) {
	ip, ok := clientid.Source(remote)
	if !ok {
		return Peer{}, fmt.Errorf("tailnet: no IP address in %v", remote)
	}
	return n.WhoIs(context.Background(), ip)
}

// OfRemote names the client behind a query's or flow's remote address: the
// node's stable ID (clientid.Namer). A node is one client whatever address
// it uses, and an address no node holds is no client.
func (n *Node) OfRemote(remote net.Addr) (string, error) {
	p, err := n.whoIsRemote(remote)
	if err != nil {
		return "", err
	}
	if p.StableID == "" {
		return "", errors.New("tailnet: the node has no stable ID")
	}
	return p.StableID, nil
}

// AuthorizeClusterPeer admits a cluster connection only from a node that
// carries the cluster tag: the tailnet's word on who a peer is stands where
// the cluster CA's certificate stands on other networks.
func (n *Node) AuthorizeClusterPeer(c net.Conn) error {
	p, err := n.whoIsRemote(c.RemoteAddr())
	if err != nil {
		return err
	}
	if !slices.Contains(p.Tags, n.tag) {
		return fmt.Errorf("tailnet node %s (%s) does not carry the cluster tag %s", p.Name, p.StableID, n.tag)
	}
	return nil
}

// Allows reports whether a node matches one of the entries: an ACL tag
// ("tag:ops"), a host name, a MagicDNS name or a stable node ID.
func (p Peer) Allows(entries []string) bool {
	for _, e := range entries {
		if strings.HasPrefix(e, "tag:") {
			if slices.Contains(p.Tags, e) {
				return true
			}
			continue
		}
		if strings.EqualFold(e, p.Name) || strings.EqualFold(strings.TrimSuffix(e, "."), p.FQDN) || e == p.StableID {
			return true
		}
	}
	return false
}

// AllowedRemote reports whether the node at remote matches one of the
// entries (see Peer.Allows); an address no node holds never does.
func (n *Node) AllowedRemote(remote net.Addr, entries []string) bool {
	p, err := n.whoIsRemote(remote)
	return err == nil && p.Allows(entries)
}
