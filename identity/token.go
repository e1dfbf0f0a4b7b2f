package identity

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Token admits new members in a role until it expires: it proves the
// joiner to the cluster (only a holder of the CA's key can make one) and
// pins the cluster's CA for the joiner (it carries the CA's hash, so the
// joiner trusts no node that cannot show that CA). The same token is a
// bearer token on the nodes' HTTP interface. Tokens need no shared state
// to check: any node checks one with the CA's key.
type Token struct {
	Role    Role
	Expires time.Time // the zero time: never
	ID      [8]byte
	mac     [16]byte
	CAHash  Hash
}

// ErrToken wraps every reason a token is refused.
var ErrToken = errors.New("identity: token refused")

const tokenPrefix = "difuse1"

var roleCodes = []Role{RoleNode, RoleClient, RoleAdmin, RoleRead, RoleWrite}

// NewToken makes a token admitting role, valid for ttl (0: until revoked).
func (id *Identity) NewToken(role Role, ttl time.Duration) (Token, error) {
	if id.caKey == nil {
		return Token{}, errors.New("identity: only a node makes tokens")
	}
	if _, err := ParseRole(string(role)); err != nil {
		return Token{}, err
	}
	t := Token{Role: role, CAHash: id.CAHash()}
	if ttl > 0 {
		t.Expires = time.Now().Add(ttl).Truncate(time.Second)
	}
	copy(t.ID[:], serial().Bytes())
	mac, err := id.tokenMAC(t)
	if err != nil {
		return Token{}, err
	}
	t.mac = mac
	return t, nil
}

// payload is what a token's MAC covers: its role, expiry and ID.
func (t Token) payload() []byte {
	b := []byte{0}
	for i, r := range roleCodes {
		if r == t.Role {
			b[0] = byte(i)
		}
	}
	var exp uint64
	if !t.Expires.IsZero() {
		exp = uint64(t.Expires.Unix())
	}
	b = binary.BigEndian.AppendUint64(b, exp)
	return append(b, t.ID[:]...)
}

func (id *Identity) tokenMAC(t Token) ([16]byte, error) {
	keyDER, err := id.CAKeyDER()
	if err != nil {
		return [16]byte{}, err
	}
	k := sha256.Sum256(append([]byte("difuse join token\x00"), keyDER...))
	m := hmac.New(sha256.New, k[:])
	m.Write(t.payload())
	var out [16]byte
	copy(out[:], m.Sum(nil))
	return out, nil
}

// String returns the token as a user passes it: difuse1.PAYLOAD.CAHASH.
func (t Token) String() string {
	enc := base64.RawURLEncoding
	return tokenPrefix + "." + enc.EncodeToString(append(t.payload(), t.mac[:]...)) + "." + enc.EncodeToString(t.CAHash[:])
}

// IDString returns the token's ID, which names it in lists and revocations.
func (t Token) IDString() string { return hex.EncodeToString(t.ID[:]) }

// ParseToken reads a token as String writes it.
func ParseToken(s string) (Token, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 3 || parts[0] != tokenPrefix {
		return Token{}, fmt.Errorf("%w: not a difuse token", ErrToken)
	}
	enc := base64.RawURLEncoding
	p, err1 := enc.DecodeString(parts[1])
	h, err2 := enc.DecodeString(parts[2])
	if err1 != nil || err2 != nil || len(p) != 1+8+8+16 || len(h) != len(Hash{}) || int(p[0]) >= len(roleCodes) {
		return Token{}, fmt.Errorf("%w: malformed", ErrToken)
	}
	t := Token{Role: roleCodes[p[0]]}
	if exp := binary.BigEndian.Uint64(p[1:9]); exp != 0 {
		t.Expires = time.Unix(int64(exp), 0)
	}
	copy(t.ID[:], p[9:17])
	copy(t.mac[:], p[17:])
	copy(t.CAHash[:], h)
	return t, nil
}

// CheckToken verifies that this cluster's CA made t and that it has not
// expired at now. The caller checks revocations.
func (id *Identity) CheckToken(t Token, now time.Time) error {
	if t.CAHash != id.CAHash() {
		return fmt.Errorf("%w: made for another cluster", ErrToken)
	}
	want, err := id.tokenMAC(t)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(want[:], t.mac[:]) != 1 {
		return fmt.Errorf("%w: not made by this cluster", ErrToken)
	}
	if !t.Expires.IsZero() && now.After(t.Expires) {
		return fmt.Errorf("%w: expired at %s", ErrToken, t.Expires.UTC().Format(time.RFC3339))
	}
	return nil
}
