package service

import (
	"context"
	"fmt"

	"github.com/ippool/ippool/internal/acl"
	"github.com/ippool/ippool/pool"
)

// ACLEnabled reports whether requests need a token: once the cluster's ACLs
// are bootstrapped, or from the start on a server told to require them
// (Options.RequireACL).
func (s *Service) ACLEnabled() bool {
	return s.opts.RequireACL || s.node.ACL().Bootstrapped()
}

// Authorize checks a request's bearer token (secret, "" when none was sent)
// against the role the request needs, and returns the token. The errors say
// what is missing without saying whether a token exists: an unknown token
// and a revoked one get the same answer.
func (s *Service) Authorize(secret string, need acl.Role) (acl.Token, error) {
	if need == acl.RolePublic {
		return acl.Token{}, nil
	}
	st := s.node.ACL()
	if !st.Bootstrapped() {
		if s.opts.RequireACL {
			return acl.Token{}, s.denied(pool.CodeUnauthorized, "access control is on (--acl) but not bootstrapped yet: run `ippool acl bootstrap` to get the first admin token")
		}
		// Open until bootstrap; serve allows that only on loopback.
		return acl.Token{Role: acl.RoleAdmin}, nil
	}
	if secret == "" {
		return acl.Token{}, s.denied(pool.CodeUnauthorized, "this request needs a token: send \"Authorization: Bearer <token>\" (the CLI takes --token or IPPOOL_TOKEN)")
	}
	t, ok := st.Authenticate(secret)
	if !ok {
		return acl.Token{}, s.denied(pool.CodeUnauthorized, "the token is not valid")
	}
	if t.Role < need {
		return t, s.denied(pool.CodeForbidden, fmt.Sprintf("this request needs a token with the %s role or above; this one has the %s role", need, t.Role))
	}
	return t, nil
}

func (s *Service) denied(code pool.Code, msg string) error {
	if s.metrics != nil {
		s.metrics.AuthFailures.WithLabelValues(string(code)).Inc()
	}
	return &pool.Error{Code: code, Msg: msg}
}

// BootstrapACL turns access control on for the whole cluster and returns the
// first admin token's secret. It works once per cluster; from then on every
// request but health and readiness needs a token.
func (s *Service) BootstrapACL(ctx context.Context) (string, acl.Token, error) {
	if err := s.admit(ctx); err != nil {
		return "", acl.Token{}, err
	}
	secret, t, err := acl.NewToken(acl.RoleAdmin, "bootstrap token", s.opts.Now())
	if err != nil {
		return "", acl.Token{}, err
	}
	if err := s.node.ApplyACL(ctx, acl.Command{Op: acl.OpBootstrap, Token: &t}); err != nil {
		return "", acl.Token{}, err
	}
	s.log.Info("ACLs bootstrapped", "accessor", t.Accessor)
	return secret, t, nil
}

// CreateToken makes a token with the role and returns its secret, which the
// cluster does not keep.
func (s *Service) CreateToken(ctx context.Context, role acl.Role, description string) (string, acl.Token, error) {
	if err := s.admit(ctx); err != nil {
		return "", acl.Token{}, err
	}
	secret, t, err := acl.NewToken(role, description, s.opts.Now())
	if err != nil {
		return "", acl.Token{}, err
	}
	if err := s.node.ApplyACL(ctx, acl.Command{Op: acl.OpCreate, Token: &t}); err != nil {
		return "", acl.Token{}, err
	}
	s.log.Info("token created", "accessor", t.Accessor, "role", t.Role.String())
	return secret, t, nil
}

// RevokeToken removes the token with the accessor on every server.
func (s *Service) RevokeToken(ctx context.Context, accessor string) error {
	if err := s.admit(ctx); err != nil {
		return err
	}
	if err := s.node.ApplyACL(ctx, acl.Command{Op: acl.OpRevoke, Accessor: accessor}); err != nil {
		return err
	}
	s.log.Info("token revoked", "accessor", accessor)
	return nil
}

// Tokens lists the cluster's tokens, after a read barrier so that a token
// just created anywhere is in the list.
func (s *Service) Tokens(ctx context.Context) ([]acl.Token, error) {
	if err := s.node.ReadBarrier(ctx); err != nil {
		return nil, err
	}
	return s.node.ACL().Tokens(), nil
}
