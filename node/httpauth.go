package node

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/difuse/difuse/identity"
)

// right is what an HTTP request needs of its bearer token.
type right int

const (
	// rightPublic: nothing (the status page's files, which hold no data).
	rightPublic right = iota
	// rightRead: the status, metrics and every GET.
	rightRead
	// rightWrite: changes to keys, blocks, pins and files.
	rightWrite
	// rightAdmin: the profiles.
	rightAdmin
)

func (a right) String() string {
	return [...]string{"nothing", "read", "write", "admin"}[a]
}

// grants is the access a token of a role gives: a mount's role writes, a
// node's is an admin's.
func grants(r identity.Role) right {
	switch r {
	case identity.RoleRead:
		return rightRead
	case identity.RoleWrite, identity.RoleClient:
		return rightWrite
	case identity.RoleAdmin, identity.RoleNode:
		return rightAdmin
	}
	return rightPublic
}

// guard serves h only to requests whose bearer token gives need, answering
// 401 (no token, or one this cluster did not make, or expired or revoked)
// or 403 (a token of too small a role) to the rest.
func (n *Node) guard(need right, h http.Handler) http.Handler {
	if need == rightPublic {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		role, err := n.bearer(r)
		switch {
		case err != nil:
			n.refuseHTTP(w, r, http.StatusUnauthorized, err.Error())
		case grants(role) < need:
			n.refuseHTTP(w, r, http.StatusForbidden, fmt.Sprintf("a %s token may not %s %s (it needs %s)", role, r.Method, r.URL.Path, need))
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// errNoBearer: a request carries no bearer token.
var errNoBearer = errors.New("this request needs a token: Authorization: Bearer TOKEN (a node writes an admin token to " + identity.AdminTokenFile + " in its data directory; difused token create -role read|write|admin makes others)")

// bearer returns the role of the request's valid bearer token.
func (n *Node) bearer(r *http.Request) (identity.Role, error) {
	h := r.Header.Get("Authorization")
	scheme, s, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", errNoBearer
	}
	tok, err := identity.ParseToken(s)
	if err == nil {
		err = n.ident.CheckToken(tok, time.Now())
	}
	if err == nil {
		err = n.access.check(tok)
	}
	return tok.Role, err
}

// refuseHTTP answers a refused request, counts it and logs it (at most
// once a second, shared with gRPC's refusals).
func (n *Node) refuseHTTP(w http.ResponseWriter, r *http.Request, code int, reason string) {
	n.metrics.refused.WithLabelValues("http", http.StatusText(code)).Inc()
	if n.refusals.Allow() {
		n.log.Warn("refused an HTTP request", "method", r.Method, "path", r.URL.Path, "code", code, "reason", reason, "from", r.RemoteAddr)
	}
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="difuse"`)
	}
	writeError(w, code, reason)
}

// ensureAdminToken writes an admin token to the node's data directory
// unless one is there: the first node of a cluster writes one, and so
// does every node (each holds the CA's key, which makes tokens).
func ensureAdminToken(id *identity.Identity, dir string) error {
	path := filepath.Join(dir, identity.AdminTokenFile)
	if _, err := os.Stat(path); err == nil || !errors.Is(err, os.ErrNotExist) {
		return err
	}
	tok, err := id.NewToken(identity.RoleAdmin, 0)
	if err != nil {
		return err
	}
	if err := identity.WriteToken(path, tok); err != nil {
		return fmt.Errorf("write the admin token: %w", err)
	}
	return nil
}
