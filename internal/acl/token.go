package acl

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"time"
)

// secretPrefix makes a leaked token recognizable to secret scanners and to
// the operator who finds it in a shell history.
const secretPrefix = "ippool_"

// NewToken makes a token with a fresh random secret and accessor, and
// returns the secret, which is shown once and never stored.
func NewToken(role Role, description string, now time.Time) (secret string, t Token, err error) {
	if err := CheckDescription(description); err != nil {
		return "", Token{}, err
	}
	var raw [32]byte
	var acc [accessorLen / 2]byte
	rand.Read(raw[:]) // crypto/rand.Read never fails (Go 1.24+)
	rand.Read(acc[:])
	secret = secretPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	return secret, Token{Accessor: hex.EncodeToString(acc[:]), Hash: HashSecret(secret), Role: role, Description: description, Created: now.UTC()}, nil
}
