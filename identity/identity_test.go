package identity

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// join admits a member to the cluster of node.
func join(t *testing.T, node *Identity, role Role, name string) *Identity {
	t.Helper()
	id, err := node.NewMember(role, name)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestSaveAndLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); !errors.Is(err, ErrNone) {
		t.Fatalf("an empty directory: %v", err)
	}
	first, err := Create("n1")
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Save(dir); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Role != RoleNode || !got.CanIssue() || got.CAHash() != first.CAHash() || got.Name() != "n1" {
		t.Errorf("loaded %+v", got)
	}
	for _, f := range []string{keyFile, caKeyFile} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v", f, st.Mode(), err)
		}
	}
	mount := join(t, first, RoleClient, "m1")
	mdir := t.TempDir()
	if err := mount.Save(mdir); err != nil {
		t.Fatal(err)
	}
	m, err := Load(mdir)
	if err != nil || m.Role != RoleClient || m.CanIssue() {
		t.Fatalf("a mount's identity: %+v, %v", m, err)
	}
	if _, err := m.Issue(m.Cert.PublicKey, RoleNode, "x"); err == nil {
		t.Error("a mount issued a certificate")
	}
}

// Parts of two clusters do not fit together.
func TestJoinedChecks(t *testing.T) {
	a, _ := Create("a")
	b, _ := Create("b")
	key, _ := NewKey()
	cert, err := a.Issue(key.Public(), RoleClient, "m")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Joined(b.CA.Raw, cert.Raw, key, nil); err == nil {
		t.Error("a certificate of cluster a taken with cluster b's CA")
	}
	other, _ := NewKey()
	if _, err := Joined(a.CA.Raw, cert.Raw, other, nil); err == nil {
		t.Error("a certificate taken with another key")
	}
	bKey, _ := b.CAKeyDER()
	if _, err := Joined(a.CA.Raw, cert.Raw, key, bKey); err == nil {
		t.Error("cluster a's CA taken with cluster b's CA key")
	}
}

func TestTokens(t *testing.T) {
	a, _ := Create("a")
	b, _ := Create("b")
	tok, err := a.NewToken(RoleClient, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseToken(tok.String())
	if err != nil {
		t.Fatal(err)
	}
	if parsed != tok || a.CheckToken(parsed, time.Now()) != nil {
		t.Fatalf("round trip: %+v, %+v, %v", parsed, tok, a.CheckToken(parsed, time.Now()))
	}
	if err := a.CheckToken(parsed, time.Now().Add(2*time.Hour)); !errors.Is(err, ErrToken) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("an expired token: %v", err)
	}
	if err := b.CheckToken(parsed, time.Now()); !errors.Is(err, ErrToken) {
		t.Errorf("a token of another cluster: %v", err)
	}
	// A token whose role was raised, or that was made with another key for
	// this cluster's CA hash, is refused.
	raised := parsed
	raised.Role = RoleNode
	if err := a.CheckToken(raised, time.Now()); !errors.Is(err, ErrToken) {
		t.Errorf("a token with its role raised: %v", err)
	}
	forged, _ := b.NewToken(RoleNode, 0)
	forged.CAHash = a.CAHash()
	if err := a.CheckToken(forged, time.Now()); !errors.Is(err, ErrToken) {
		t.Errorf("a forged token: %v", err)
	}
	never, _ := a.NewToken(RoleNode, 0)
	if err := a.CheckToken(never, time.Now().Add(100*365*24*time.Hour)); err != nil {
		t.Errorf("a token without expiry: %v", err)
	}
	for _, bad := range []string{"", "difuse1", "difuse1.x.y", tok.String() + "x", strings.Replace(tok.String(), "difuse1", "difuse2", 1)} {
		if _, err := ParseToken(bad); !errors.Is(err, ErrToken) {
			t.Errorf("ParseToken(%q): %v", bad, err)
		}
	}
}

// handshake runs a TLS handshake over loopback between server and client
// configurations and returns how many verified chains the server holds
// for the client.
func handshake(t *testing.T, server, client *tls.Config) (int, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		chains int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		srv := tls.Server(c, server)
		if err := srv.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		// TLS 1.3 checks the client's certificate after the client
		// finishes: a read makes the outcome certain.
		buf := make([]byte, 1)
		if _, err := srv.Read(buf); err != nil {
			done <- result{err: err}
			return
		}
		done <- result{chains: len(srv.ConnectionState().VerifiedChains)}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	cli := tls.Client(c, client)
	if err := cli.Handshake(); err != nil {
		c.Close()
		<-done
		return 0, err
	}
	cli.Write([]byte{0})
	r := <-done
	return r.chains, r.err
}

func TestHandshakes(t *testing.T) {
	node, _ := Create("n1")
	other, _ := Create("x")
	mount := join(t, node, RoleClient, "m1")
	peer := join(t, node, RoleNode, "n2")
	if n, err := handshake(t, node.ServerConfig(), mount.ClientConfig()); err != nil || n != 1 {
		t.Errorf("a mount of the cluster: %d chains, %v", n, err)
	}
	if n, err := handshake(t, node.ServerConfig(), peer.ClientConfig()); err != nil || n != 1 {
		t.Errorf("a node of the cluster: %d chains, %v", n, err)
	}
	if n, err := handshake(t, node.ServerConfig(), PinnedConfig(node.CAHash())); err != nil || n != 0 {
		t.Errorf("a joiner: %d chains, %v", n, err)
	}
	if _, err := handshake(t, node.ServerConfig(), PinnedConfig(other.CAHash())); err == nil {
		t.Error("a joiner whose token names another CA trusted the node")
	}
	if _, err := handshake(t, node.ServerConfig(), other.ClientConfig()); err == nil {
		t.Error("a member of another cluster got in")
	}
	if _, err := handshake(t, other.ServerConfig(), mount.ClientConfig()); err == nil {
		t.Error("a mount trusted a node of another cluster")
	}
	// A mount's certificate cannot serve as a node's.
	fake := mount.ServerConfig()
	if _, err := handshake(t, fake, peer.ClientConfig()); err == nil {
		t.Error("a node trusted a mount posing as a node")
	}
}
