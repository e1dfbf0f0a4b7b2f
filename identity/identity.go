// Package identity makes a cluster members-only: the cluster's certificate
// authority, the join tokens that admit a new node or mount, the
// certificates members hold, and the TLS configurations every gRPC
// connection between them uses. It does not decide what a role may call
// (the servers do, see node) and holds no state of its own beyond the files
// in a member's directory.
//
// A cluster's first node creates the CA. Every node holds the CA's key, so
// any node can admit a joiner (no node is special); a mount holds only its
// own certificate.
package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// Role is what a member may do.
type Role string

// The roles.
const (
	// RoleNode: every inter-node service.
	RoleNode Role = "node"
	// RoleClient: a mount's transactions on filesystem and key-value
	// partitions, and block reads and writes.
	RoleClient Role = "client"
	// RoleAdmin: a client that may also run an operator's commands.
	RoleAdmin Role = "admin"
	// RoleRead: an HTTP token that reads (the status page, metrics,
	// GETs). No member has it.
	RoleRead Role = "read"
	// RoleWrite: an HTTP token that also writes (key-value, blocks,
	// files). No member has it.
	RoleWrite Role = "write"
)

// ParseRole reads a role's name.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleNode, RoleClient, RoleAdmin, RoleRead, RoleWrite:
		return r, nil
	}
	return "", fmt.Errorf("identity: unknown role %q (node, client, admin, read or write)", s)
}

// Member reports whether a member (a certificate) may have the role:
// read and write are for HTTP tokens only.
func (r Role) Member() bool { return r == RoleNode || r == RoleClient || r == RoleAdmin }

// ServerName is the name every node's certificate carries and every member
// checks: a node is a node of the cluster, whichever address it is at.
const ServerName = "node.difuse"

// Files in a member's directory.
const (
	caFile    = "ca.crt"
	caKeyFile = "ca.key"
	certFile  = "member.crt"
	keyFile   = "member.key"
	// TokenFile is where a cluster's first node writes a token that
	// admits nodes (mode 0600).
	TokenFile = "join-token"
	// AdminTokenFile is where a node writes an admin token for its HTTP
	// interface and operators (mode 0600).
	AdminTokenFile = "admin-token"
)

// ErrNone: the directory holds no identity yet.
var ErrNone = errors.New("identity: none here yet")

// certLife is how long certificates are valid.
const certLife = 10 * 365 * 24 * time.Hour

// Identity is a member's: the cluster's CA, its own certificate and key,
// and for a node the CA's key.
type Identity struct {
	CA    *x509.Certificate
	Cert  *x509.Certificate
	Role  Role
	key   crypto.Signer
	caKey crypto.Signer // nil unless a node
}

// Hash is the SHA-256 of a CA certificate: what a token pins.
type Hash [sha256.Size]byte

// CAHash returns the hash of the cluster's CA certificate.
func (id *Identity) CAHash() Hash { return sha256.Sum256(id.CA.Raw) }

// Name returns the name the member's certificate was issued to.
func (id *Identity) Name() string { return id.Cert.Subject.CommonName }

// NewKey returns a new private key for a member.
func NewKey() (crypto.Signer, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// Create makes a new cluster: its CA, and the first node's certificate
// issued to name.
func Create(name string) (*Identity, error) {
	caKey, err := NewKey()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "difuse cluster CA " + name, Organization: []string{"difuse"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certLife),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("identity: create the CA: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	self := &Identity{CA: ca, caKey: caKey}
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	cert, err := self.Issue(key.Public(), RoleNode, name)
	if err != nil {
		return nil, err
	}
	self.Cert, self.Role, self.key = cert, RoleNode, key
	return self, nil
}

// CanIssue reports whether this member holds the CA's key.
func (id *Identity) CanIssue() bool { return id.caKey != nil }

// Issue signs a certificate for pub in role, issued to name. Only a node
// can.
func (id *Identity) Issue(pub crypto.PublicKey, role Role, name string) (*x509.Certificate, error) {
	if id.caKey == nil {
		return nil, errors.New("identity: only a node issues certificates")
	}
	if !role.Member() {
		return nil, fmt.Errorf("identity: no member has the role %q", role)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name, OrganizationalUnit: []string{string(role)}, Organization: []string{"difuse"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certLife),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if role == RoleNode {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		tmpl.DNSNames = []string{ServerName}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, id.CA, pub, id.caKey)
	if err != nil {
		return nil, fmt.Errorf("identity: issue a certificate to %s: %w", name, err)
	}
	return x509.ParseCertificate(der)
}

// NewMember returns a whole new member's identity in role, issued to name,
// made where the CA's key is (a joiner far away makes its own key and asks
// for a certificate instead).
func (id *Identity) NewMember(role Role, name string) (*Identity, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	cert, caKey, err := id.Grant(key.Public(), role, name)
	if err != nil {
		return nil, err
	}
	return Joined(id.CA.Raw, cert.Raw, key, caKey)
}

// Grant is what a new member in role gets for its key pub: a certificate
// issued to name and, for a node, the CA's key (PKCS #8 DER).
func (id *Identity) Grant(pub crypto.PublicKey, role Role, name string) (*x509.Certificate, []byte, error) {
	cert, err := id.Issue(pub, role, name)
	if err != nil || role != RoleNode {
		return cert, nil, err
	}
	caKey, err := id.CAKeyDER()
	return cert, caKey, err
}

// Joined assembles the identity a joiner was given: the CA, its
// certificate for key, and for a node the CA's key (PKCS #8 DER). It
// checks that they belong together.
func Joined(caDER, certDER []byte, key crypto.Signer, caKeyDER []byte) (*Identity, error) {
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("identity: the CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("identity: the certificate: %w", err)
	}
	id := &Identity{CA: ca, Cert: cert, key: key}
	if len(caKeyDER) > 0 {
		k, err := x509.ParsePKCS8PrivateKey(caKeyDER)
		if err != nil {
			return nil, fmt.Errorf("identity: the CA key: %w", err)
		}
		signer, ok := k.(crypto.Signer)
		if !ok {
			return nil, errors.New("identity: the CA key cannot sign")
		}
		id.caKey = signer
	}
	if err := id.check(); err != nil {
		return nil, err
	}
	return id, nil
}

// check verifies that the certificate is the CA's and for the key, that
// the CA key is the CA's, and reads the role.
func (id *Identity) check() error {
	if !id.CA.IsCA {
		return errors.New("identity: the CA certificate is not a CA's")
	}
	if _, err := id.Cert.Verify(x509.VerifyOptions{Roots: id.pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("identity: the certificate is not the CA's: %w", err)
	}
	if !samePublic(id.Cert.PublicKey, id.key.Public()) {
		return errors.New("identity: the certificate is not for the key")
	}
	if id.caKey != nil && !samePublic(id.CA.PublicKey, id.caKey.Public()) {
		return errors.New("identity: the CA key is not the CA's")
	}
	role, err := RoleOf(id.Cert)
	if err != nil {
		return err
	}
	id.Role = role
	return nil
}

func samePublic(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// RoleOf reads the role a certificate was issued for.
func RoleOf(cert *x509.Certificate) (Role, error) {
	if len(cert.Subject.OrganizationalUnit) != 1 {
		return "", fmt.Errorf("identity: certificate of %q names no role", cert.Subject.CommonName)
	}
	r, err := ParseRole(cert.Subject.OrganizationalUnit[0])
	if err == nil && !r.Member() {
		err = fmt.Errorf("identity: certificate of %q has the role %q, which no member has", cert.Subject.CommonName, r)
	}
	return r, err
}

// CAKeyDER returns the CA's key (PKCS #8 DER), which a node gives a node
// it admits.
func (id *Identity) CAKeyDER() ([]byte, error) {
	if id.caKey == nil {
		return nil, errors.New("identity: no CA key here")
	}
	return x509.MarshalPKCS8PrivateKey(id.caKey)
}

// pool returns a pool holding the cluster's CA.
func (id *Identity) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(id.CA)
	return p
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) // never fails
	return n
}

// Save writes the identity to dir: the CA certificate, for a node the CA's
// key, the member's key and, last, its certificate (Load takes a directory
// with the certificate as holding the whole identity); keys with mode 0600.
func (id *Identity) Save(dir string) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(id.key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	write := func(name, kind string, der []byte, mode os.FileMode) error {
		if err := WriteFileSync(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), mode); err != nil {
			return fmt.Errorf("identity: save %s: %w", name, err)
		}
		return nil
	}
	if err := write(caFile, "CERTIFICATE", id.CA.Raw, 0o644); err != nil {
		return err
	}
	if id.caKey != nil {
		caKeyDER, err := id.CAKeyDER()
		if err != nil {
			return err
		}
		if err := write(caKeyFile, "PRIVATE KEY", caKeyDER, 0o600); err != nil {
			return err
		}
	}
	if err := write(keyFile, "PRIVATE KEY", keyDER, 0o600); err != nil {
		return err
	}
	return write(certFile, "CERTIFICATE", id.Cert.Raw, 0o644)
}

// Load reads the identity saved in dir; ErrNone if there is none.
func Load(dir string) (*Identity, error) {
	certDER, err := readPEM(filepath.Join(dir, certFile), "CERTIFICATE")
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNone
	}
	if err != nil {
		return nil, err
	}
	caDER, err := readPEM(filepath.Join(dir, caFile), "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	keyDER, err := readPEM(filepath.Join(dir, keyFile), "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", keyFile, err)
	}
	key, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("identity: %s cannot sign", keyFile)
	}
	caKeyDER, err := readPEM(filepath.Join(dir, caKeyFile), "PRIVATE KEY")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	id, err := Joined(caDER, certDER, key, caKeyDER)
	if err != nil {
		return nil, fmt.Errorf("identity in %s: %w", dir, err)
	}
	return id, nil
}

func readPEM(path, kind string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != kind {
		return nil, fmt.Errorf("identity: %s holds no %s", path, kind)
	}
	return block.Bytes, nil
}

// WriteFileSync writes a file through a temporary one, synced and renamed
// into place, then syncs the directory, so a crash or a power loss leaves
// the old file or the new one.
func WriteFileSync(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// WriteToken writes a token to path (mode 0600), synced like the identity.
func WriteToken(path string, t Token) error {
	return WriteFileSync(path, []byte(t.String()+"\n"), 0o600)
}

// TLSCertificate returns the member's certificate for a TLS handshake,
// with the CA's after it so a joiner can check the CA against its token.
func (id *Identity) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{id.Cert.Raw, id.CA.Raw}, PrivateKey: id.key, Leaf: id.Cert}
}
