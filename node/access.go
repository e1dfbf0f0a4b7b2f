package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/difuse/difuse/access"
	"github.com/difuse/difuse/identity"
)

// accessList is a node's copy of the cluster's access record (package
// access): revoked tokens and removed members. The node reads the record
// every AccessRefresh and keeps the copy in its data directory, so that
// after a restart it refuses from the first handshake on what the cluster
// refused before.
type accessList struct {
	path string // the copy on disk

	mu      sync.RWMutex
	state   access.State
	revoked map[string]bool           // token ID → revoked
	removed map[string]access.Removal // member name → its removal
}

// AccessRefresh is how often a node reads the cluster's access record:
// a revocation or removal takes effect on every node within it.
const AccessRefresh = 5 * time.Second

// accessFile is the copy of the access record in a node's data directory.
const accessFile = "access.json"

// loadAccess returns the access list kept in dir, empty if none is.
func loadAccess(dir string) (*accessList, error) {
	a := &accessList{path: filepath.Join(dir, accessFile)}
	var s access.State
	b, err := os.ReadFile(a.path)
	if err == nil {
		err = json.Unmarshal(b, &s)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("the access list in %s: %w", a.path, err)
	}
	a.set(s)
	return a, nil
}

func (a *accessList) set(s access.State) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.state = s
	a.revoked = map[string]bool{}
	a.removed = map[string]access.Removal{}
	for _, id := range s.Revoked {
		a.revoked[id] = true
	}
	for _, r := range s.Removed {
		a.removed[r.Name] = r
	}
}

// update replaces the list with s, and its copy on disk, if s differs.
func (a *accessList) update(s access.State) error {
	a.mu.RLock()
	same := a.state.Equal(s)
	a.mu.RUnlock()
	if same {
		return nil
	}
	a.set(s)
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return identity.WriteFileSync(a.path, b, 0o600)
}

// check refuses a revoked token.
func (a *accessList) check(t identity.Token) error {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.revoked[t.IDString()] {
		return fmt.Errorf("%w: revoked", identity.ErrToken)
	}
	return nil
}

// checkCert refuses the certificate of a removed member.
func (a *accessList) checkCert(cert *x509.Certificate) error {
	a.mu.RLock()
	defer a.mu.RUnlock()
	r, ok := a.removed[cert.Subject.CommonName]
	if ok && !slices.Contains(r.Allowed, serialHex(cert)) {
		return fmt.Errorf("the member %q was removed from the cluster at %s", r.Name, r.At.UTC().Format(time.RFC3339))
	}
	return nil
}

// isRemoved reports whether the member name was removed.
func (a *accessList) isRemoved(name string) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	_, ok := a.removed[name]
	return ok
}

func serialHex(cert *x509.Certificate) string { return hex.EncodeToString(cert.SerialNumber.Bytes()) }

// verifyConnection refuses a TLS peer whose certificate a removal revoked;
// it runs on every handshake, both ways.
func (a *accessList) verifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil // a joiner shows none; every service but the join refuses it
	}
	return a.checkCert(cs.PeerCertificates[0])
}

// refreshAccess reads the cluster's access record into the node's list
// every AccessRefresh until ctx ends, keeping the last one it read when
// the cluster cannot answer.
func (n *Node) refreshAccess(ctx context.Context) {
	t := time.NewTicker(AccessRefresh)
	defer t.Stop()
	for {
		if err := n.readAccess(ctx); err != nil && ctx.Err() == nil {
			n.log.Debug("reading the access record", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// readAccess reads the cluster's access record into the node's list once,
// within AccessRefresh.
func (n *Node) readAccess(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, AccessRefresh)
	defer cancel()
	s, err := access.Read(ctx, n.txlog)
	if err != nil {
		return err
	}
	return n.access.update(s)
}

// readmit lets a certificate just issued to the name of a removed member
// in (see access.Readmit), on this node at once. A name this node does
// not know as removed needs nothing (a removal younger than
// AccessRefresh may be missed: the new certificate is then refused).
func (n *Node) readmit(ctx context.Context, cert *x509.Certificate) error {
	if !n.access.isRemoved(cert.Subject.CommonName) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.RequestTimeout)
	defer cancel()
	if err := access.Readmit(ctx, n.txlog, cert.Subject.CommonName, serialHex(cert)); err != nil {
		return err
	}
	return n.readAccess(ctx)
}
