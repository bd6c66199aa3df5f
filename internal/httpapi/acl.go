package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/wire"
)

// The access control endpoints, under /v1/acl. Secrets appear only in the
// answers to bootstrap and create; lists show accessors.

func tokenOut(t acl.Token, secret string) wire.Token {
	return wire.Token{Accessor: t.Accessor, Secret: secret, Role: t.Role.String(), Description: t.Description, Created: t.Created.UTC()}
}

func (a *api) bootstrapACL(w http.ResponseWriter, r *http.Request) {
	if !drainBody(w, r) {
		return
	}
	secret, t, err := a.svc.BootstrapACL(r.Context())
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, tokenOut(t, secret))
}

func (a *api) aclSelf(w http.ResponseWriter, r *http.Request) {
	if !a.svc.ACLEnabled() {
		writeJSON(w, http.StatusOK, wire.ACLSelf{Enabled: false})
		return
	}
	t, err := a.svc.Authorize(bearerToken(r.Header.Get("Authorization")), acl.RoleRead)
	if err != nil {
		a.fail(w, err)
		return
	}
	out := tokenOut(t, "")
	writeJSON(w, http.StatusOK, wire.ACLSelf{Enabled: true, Token: &out})
}

func (a *api) listTokens(w http.ResponseWriter, r *http.Request) {
	ts, err := a.svc.Tokens(r.Context())
	if err != nil {
		a.fail(w, err)
		return
	}
	out := wire.TokenList{Tokens: make([]wire.Token, len(ts))}
	for i, t := range ts {
		out.Tokens[i] = tokenOut(t, "")
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) createToken(w http.ResponseWriter, r *http.Request) {
	var req wire.TokenRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			tooLarge(0, mbe.Limit).write(w)
			return
		}
		writeError(w, http.StatusBadRequest, "bad_request", `the body must be JSON like {"role":"allocate","description":"gateway 1"}: `+err.Error())
		return
	}
	role, err := acl.ParseRole(req.Role)
	if err != nil {
		a.fail(w, err)
		return
	}
	secret, t, err := a.svc.CreateToken(r.Context(), role, req.Description)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, tokenOut(t, secret))
}

func (a *api) revokeToken(w http.ResponseWriter, r *http.Request) {
	if !drainBody(w, r) {
		return
	}
	accessor := r.PathValue("accessor")
	if err := a.svc.RevokeToken(r.Context(), accessor); err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"revoked": accessor})
}
