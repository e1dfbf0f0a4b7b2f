package node_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	flatbuffers "github.com/google/flatbuffers/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/difuse/difuse/identity"
	"github.com/difuse/difuse/node"
)

// The first node writes a join token that admits nodes; a node without a
// token, or with one that is forged, expired, of another cluster or
// admitting a client, cannot join, and the ring stays as it was.
func TestJoinNeedsAValidToken(t *testing.T) {
	first := startNode(t, t.TempDir(), "")
	b, err := os.ReadFile(filepath.Join(first.Status().DataDir, identity.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(first.Status().DataDir, identity.TokenFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("the join token file has mode %v", st.Mode().Perm())
	}
	written, err := identity.ParseToken(string(b))
	if err != nil || first.Identity().CheckToken(written, time.Now()) != nil {
		t.Fatalf("the written join token: %v", err)
	}
	other, err := identity.Create("elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	id := first.Identity()
	expired, _ := id.NewToken(identity.RoleNode, time.Second)
	client, _ := id.NewToken(identity.RoleClient, time.Hour)
	foreign, _ := other.NewToken(identity.RoleNode, time.Hour)
	forged := foreign
	forged.CAHash = id.CAHash()
	time.Sleep(2 * time.Second) // expired expires
	for name, tok := range map[string]string{
		"no token": "", "garbage": "difuse1.abc.def", "expired": expired.String(), "a client's": client.String(),
		"another cluster's": foreign.String(), "forged": forged.String(),
	} {
		cfg := testConfig(t.TempDir(), first.GRPCAddr())
		cfg.Token, cfg.JoinTimeout = tok, 2*time.Second
		if _, err := node.New(cfg); !errors.Is(err, node.ErrJoin) {
			t.Fatalf("%s: err = %v, want ErrJoin", name, err)
		}
	}
	if hosts := first.Ring().KnownHosts(); len(hosts) != 0 {
		t.Errorf("the ring grew to %v", hosts)
	}
	second := startNode(t, t.TempDir(), first.GRPCAddr())
	waitAgree(t, []*node.Node{first, second}, 100, 20*time.Second)
}

// emptyTable is a message every request table of the schema decodes from.
func emptyTable() []byte {
	b := flatbuffers.NewBuilder(16)
	b.StartObject(0)
	b.Finish(b.EndObject())
	return b.FinishedBytes()
}

// Each role reaches only its services: a mount's certificate cannot sweep,
// delete blocks, make a node leave, replicate or enter the ring; a caller
// without a certificate reaches nothing but the join service; a plain
// connection nothing at all.
func TestRolesAreEnforced(t *testing.T) {
	n := startNode(t, t.TempDir(), "")
	conn := func(creds credentials.TransportCredentials) *grpc.ClientConn {
		cc, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(creds), grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	call := func(cc *grpc.ClientConn, method string) error {
		var out []byte
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return cc.Invoke(ctx, method, emptyTable(), &out)
	}
	nodeOnly := []string{"/fb.GC/Sweep", "/fb.Blocks/Delete", "/fb.Heal/Leave", "/fb.TxLog/Append", "/fb.TxLog/Prepare", "/fb.Ring/Rectify", "/fb.Heal/Items"}
	mount := conn(creds(t, n.GRPCAddr()))
	for _, m := range nodeOnly {
		if err := call(mount, m); status.Code(err) != codes.PermissionDenied {
			t.Errorf("a mount calls %s: %v, want PermissionDenied", m, err)
		}
	}
	if err := call(mount, "/fb.Client/Status"); err != nil {
		t.Errorf("a mount asks for the status: %v", err)
	}
	stranger := conn(credentials.NewTLS(identity.PinnedConfig(n.Identity().CAHash())))
	for _, m := range append(nodeOnly, "/fb.Client/Status", "/fb.Peer/Ping") {
		if err := call(stranger, m); status.Code(err) != codes.Unauthenticated {
			t.Errorf("a caller without a certificate calls %s: %v, want Unauthenticated", m, err)
		}
	}
	if err := call(conn(insecure.NewCredentials()), "/fb.Peer/Ping"); status.Code(err) != codes.Unavailable {
		t.Errorf("a plain connection: %v", err)
	}
	// Another cluster's node is a stranger too: its certificate fails the
	// handshake.
	other, _ := identity.Create("elsewhere")
	if err := call(conn(credentials.NewTLS(other.ClientConfig())), "/fb.Peer/Ping"); err == nil {
		t.Error("a node of another cluster was answered")
	}
}
