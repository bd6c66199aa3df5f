package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/ippool/ippool/internal/policy"
	"github.com/ippool/ippool/pool"
	"github.com/ippool/ippool/wire"
)

func (a *api) getPolicy(w http.ResponseWriter, r *http.Request) {
	p := a.svc.Policy()
	out := wire.Policy{}
	if p != nil {
		out = wire.Policy{Text: p.Text, Revision: p.Revision, Rules: p.Policy.Len()}
		doc := p.Policy.Document()
		for i, h := range p.Policy.Hits() {
			action := "allow"
			if i < len(doc.Rules) {
				action = doc.Rules[i].Action
			} else if doc.Default == "deny" {
				action = "deny"
			}
			out.Hits = append(out.Hits, wire.PolicyRuleHits{Rule: h.Name, Action: action, Hits: h.Hits})
		}
	}
	w.Header().Set("ETag", strconv.Quote(strconv.FormatUint(out.Revision, 10)))
	writeJSON(w, http.StatusOK, out)
}

// setPolicy takes the document as the body. A revision to change, when
// given, comes from If-Match (an ETag as GET gave it) or ?if_revision=.
func (a *api) setPolicy(w http.ResponseWriter, r *http.Request) {
	text, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			tooLarge(0, mbe.Limit).write(w)
			return
		}
		writeError(w, http.StatusBadRequest, "bad_request", "reading the body: "+err.Error())
		return
	}
	cmd := policy.Command{Text: string(text)}
	rev := r.Header.Get("If-Match")
	if rev == "" {
		rev = r.URL.Query().Get("if_revision")
	}
	if rev != "" {
		n, err := strconv.ParseUint(strings.Trim(strings.TrimPrefix(rev, "W/"), `"`), 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("If-Match %q is not a policy revision (a number, as GET /v1/policy's ETag)", rev))
			return
		}
		cmd.Match, cmd.IfRevision = true, n
	}
	n, err := a.svc.SetPolicy(r.Context(), cmd)
	if err != nil {
		a.fail(w, err)
		return
	}
	doc, _ := policy.Parse(text)
	w.Header().Set("ETag", strconv.Quote(strconv.FormatUint(n, 10)))
	writeJSON(w, http.StatusOK, wire.Policy{Revision: n, Rules: doc.Len()})
}

func (a *api) testPolicy(w http.ResponseWriter, r *http.Request) {
	var req wire.PolicyTest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", `the body must be JSON like {"client":"alice-laptop","domain":"git.corp.example","port":443,"proto":"tcp"}: `+err.Error())
		return
	}
	c := policy.Client{ID: req.Client, Tags: req.Tags, User: req.User}
	if err := pool.ValidateClientID(req.Client); err != nil {
		a.fail(w, err)
		return
	}
	if req.Addr != "" {
		addr, err := netip.ParseAddr(req.Addr)
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid_address", fmt.Sprintf("addr %q is not an IP address", req.Addr))
			return
		}
		c.Addr = addr
	}
	domain, err := pool.NormalizeDomain(req.Domain)
	if err != nil {
		a.fail(w, err)
		return
	}
	var proto policy.Proto
	switch req.Proto {
	case "", "tcp":
		proto = policy.TCP
	case "udp":
		proto = policy.UDP
	default:
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("proto %q is neither tcp nor udp", req.Proto))
		return
	}
	if req.Port == 0 {
		proto = 0
	}
	d, rev := a.svc.TestPolicy(&c, domain, proto, req.Port)
	out := wire.PolicyDecision{Rule: d.RuleName(), Index: d.Rule, Action: d.Action.String(), Revision: rev}
	if e := d.EgressAddr(c.ID, domain); e.IsValid() {
		out.Egress = e.String()
	}
	writeJSON(w, http.StatusOK, out)
}
