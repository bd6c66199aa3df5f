package client

import (
	"context"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"

	"github.com/ippool/ippool/wire"
)

// The reads the web console's pages make, for programs that want the same
// view: each answer is bounded whatever the cluster holds.

// Stats returns the answering server's state size and its counters since it
// started (GET /v1/stats). Two reads give rates.
func (c *Client) Stats(ctx context.Context) (wire.Stats, error) {
	var s wire.Stats
	err := c.call(ctx, http.MethodGet, "/v1/stats", nil, &s)
	return s, err
}

// TopClients ranks the clients whose ID starts with prefix by how many
// mappings they hold, most first, and returns ranks [offset, offset+limit)
// (limit 1 to 100) with how many clients match (GET /v1/pool/clients).
func (c *Client) TopClients(ctx context.Context, prefix string, offset, limit int) (wire.ClientRanking, error) {
	q := url.Values{"limit": {strconv.Itoa(limit)}, "offset": {strconv.Itoa(offset)}}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	var r wire.ClientRanking
	err := c.call(ctx, http.MethodGet, path("pool", "clients")+"?"+q.Encode(), nil, &r)
	return r, err
}

// Occupancy returns a picture of the client's pool in at most cells cells
// (1 to 4,096): what each block of addresses holds
// (GET /v1/clients/{client}/occupancy).
func (c *Client) Occupancy(ctx context.Context, client string, cells int) (wire.Occupancy, error) {
	var o wire.Occupancy
	err := c.call(ctx, http.MethodGet, path("clients", client, "occupancy")+"?cells="+strconv.Itoa(cells), nil, &o)
	return o, err
}

// ListPage returns a page of the client's mappings in address order: of
// those at or after from (all when from is the zero Addr), skip offset and
// return at most limit (1 to 1,000). The answer's Total is the client's
// mapping count and Offset the page's position among them. consistent
// reads through the read barrier, as List does.
func (c *Client) ListPage(ctx context.Context, client string, from netip.Addr, offset, limit int, consistent bool) (wire.List, error) {
	q := url.Values{"limit": {strconv.Itoa(limit)}, "offset": {strconv.Itoa(offset)}}
	if from.IsValid() {
		q.Set("from", from.String())
	}
	if consistent {
		q.Set("consistent", "true")
	}
	var l wire.List
	if err := c.call(ctx, http.MethodGet, path("clients", client)+"?"+q.Encode(), nil, &l); err != nil {
		return l, err
	}
	for i := range l.Mappings {
		if l.Mappings[i].Client == "" {
			l.Mappings[i].Client = client
		}
	}
	return l, nil
}
