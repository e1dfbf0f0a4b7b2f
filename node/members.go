package node

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	flatbuffers "github.com/google/flatbuffers/go"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/difuse/difuse/client"
	"github.com/difuse/difuse/identity"
	"github.com/difuse/difuse/wire/fb"
)

// loadIdentity returns the node's identity, kept in its data directory:
// as saved there (with a certificate for a new address if the node
// moved); else, for a node that starts a cluster, a new cluster's
// CA (and a join token written to identity.TokenFile); else one a node
// of the cluster at cfg.Join issues for cfg.Token.
func loadIdentity(cfg Config, dir, advertise string) (*identity.Identity, error) {
	id, err := identity.Load(dir)
	switch {
	case err == nil:
		if id.Role != identity.RoleNode || !id.CanIssue() {
			return nil, fmt.Errorf("%w: the identity in %s is a %s's, not a node's", ErrJoin, dir, id.Role)
		}
		if id.Name() != advertise {
			// A node's vnodes are its address's, which its certificate
			// names: a node that moved issues itself one for its new
			// address (it holds the CA's key).
			if id, err = id.NewMember(identity.RoleNode, advertise); err != nil {
				return nil, err
			}
			return id, id.Save(dir)
		}
		return id, nil
	case !errors.Is(err, identity.ErrNone):
		return nil, err
	case cfg.Join == "":
		if id, err = identity.Create(advertise); err != nil {
			return nil, err
		}
		tok, err := id.NewToken(identity.RoleNode, 0)
		if err != nil {
			return nil, err
		}
		// The token first: a node that stops in between has no identity
		// yet, and makes the cluster (and the token) afresh on its next
		// start.
		if err := identity.WriteToken(filepath.Join(dir, identity.TokenFile), tok); err != nil {
			return nil, fmt.Errorf("write the join token: %w", err)
		}
		return id, id.Save(dir)
	}
	if cfg.Token == "" {
		return nil, fmt.Errorf("%w: joining %s needs a join token (the first node wrote one to %s in its data directory)", ErrJoin, cfg.Join, identity.TokenFile)
	}
	tok, err := identity.ParseToken(cfg.Token)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJoin, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.JoinTimeout)
	defer cancel()
	if id, err = client.Admit(ctx, []string{cfg.Join}, tok, advertise, false); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJoin, err)
	}
	if id.Role != identity.RoleNode {
		return nil, fmt.Errorf("%w: the token admits a %s, not a node", ErrJoin, id.Role)
	}
	return id, id.Save(dir)
}

// joinService admits new members: it checks a join token and issues the
// certificate the token allows (see client.Admit).
type joinService struct {
	fb.UnimplementedJoinServer
	n *Node
}

// maxMemberName bounds the name a joiner asks its certificate be issued to.
const maxMemberName = 256

func (s joinService) Admit(ctx context.Context, r *fb.JoinRequest) (*flatbuffers.Builder, error) {
	tok, err := identity.ParseToken(string(r.Token()))
	if err == nil {
		err = s.n.ident.CheckToken(tok, time.Now())
	}
	if err == nil {
		err = s.n.access.check(tok)
	}
	if err == nil && !tok.Role.Member() {
		err = fmt.Errorf("%w: a %s token is for HTTP only and admits no member", identity.ErrToken, tok.Role)
	}
	if err != nil {
		return nil, s.n.refuse(ctx, "/fb.Join/Admit", codes.Unauthenticated, err.Error())
	}
	role := tok.Role
	if r.Client() {
		role = identity.RoleClient
	}
	name := string(r.Name())
	pub, err := x509.ParsePKIXPublicKey(r.PublicKeyBytes())
	if err != nil || len(name) > maxMemberName {
		return nil, status.Errorf(codes.InvalidArgument, "join: a public key and a name of at most %d bytes are needed", maxMemberName)
	}
	cert, caKey, err := s.n.ident.Grant(pub, role, name)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "join: %v", err)
	}
	if err := s.n.readmit(ctx, cert); err != nil {
		return nil, status.Errorf(codes.Unavailable, "join: %s was removed from the cluster, and its new certificate could not be recorded: %v", name, err)
	}
	s.n.log.Info("admitted a member", "name", name, "role", role, "token", tok.IDString())
	b := flatbuffers.NewBuilder(2048)
	ca, c, k := b.CreateByteVector(s.n.ident.CA.Raw), b.CreateByteVector(cert.Raw), b.CreateByteVector(caKey)
	fb.JoinReplyStart(b)
	fb.JoinReplyAddCa(b, ca)
	fb.JoinReplyAddCert(b, c)
	fb.JoinReplyAddCaKey(b, k)
	b.Finish(fb.JoinReplyEnd(b))
	return b, nil
}

// allowed returns the roles that may call a gRPC service; the join
// service needs no certificate at all.
func allowed(service, method string) []identity.Role {
	switch {
	case service == "Client" || service == "Peer":
		return []identity.Role{identity.RoleNode, identity.RoleClient, identity.RoleAdmin}
	case service == "Heal" && method == "Leave", service == "GC" && method == "Collect":
		return []identity.Role{identity.RoleNode, identity.RoleAdmin}
	}
	return []identity.Role{identity.RoleNode}
}

// authorize refuses a call whose caller shows no certificate of the
// cluster, or one of a role the service does not admit; it returns ctx
// with the caller's role (see callerRole).
func (n *Node) authorize(ctx context.Context, full string) (context.Context, error) {
	service, method := splitMethod(full)
	if service == "Join" {
		return ctx, nil
	}
	cert, ok := identity.PeerCert(ctx)
	if !ok {
		return ctx, n.refuse(ctx, full, codes.Unauthenticated, "no cluster certificate")
	}
	role, err := identity.RoleOf(cert)
	if err != nil {
		return ctx, n.refuse(ctx, full, codes.Unauthenticated, fmt.Sprintf("certificate of %q: %v", cert.Subject.CommonName, err))
	}
	// Refused at the handshake too; a connection made before the removal
	// was known ends here.
	if err := n.access.checkCert(cert); err != nil {
		return ctx, n.refuse(ctx, full, codes.Unauthenticated, err.Error())
	}
	if !slices.Contains(allowed(service, method), role) {
		return ctx, n.refuse(ctx, full, codes.PermissionDenied, fmt.Sprintf("a %s may not call %s.%s", role, service, method))
	}
	return context.WithValue(ctx, roleKey{}, role), nil
}

// roleKey is the context key of the caller's role.
type roleKey struct{}

// callerRole returns the role authorize found for the caller of a gRPC
// handler ("" for none).
func callerRole(ctx context.Context) identity.Role {
	r, _ := ctx.Value(roleKey{}).(identity.Role)
	return r
}

// refuse returns a refusal's status and logs it, at most once a second.
func (n *Node) refuse(ctx context.Context, full string, code codes.Code, reason string) error {
	n.metrics.refused.WithLabelValues("grpc", code.String()).Inc()
	if n.refusals.Allow() {
		from := "unknown"
		if cert, ok := identity.PeerCert(ctx); ok {
			from = cert.Subject.CommonName
		}
		n.log.Warn("refused a call", "method", full, "code", code, "reason", reason, "from", from)
	}
	return status.Error(code, strings.TrimPrefix(full, "/")+": "+reason)
}

// authOptions are the gRPC server options that check every call's caller,
// before its request is read.
func (n *Node) authOptions() []grpc.ServerOption {
	n.refusals = rate.NewLimiter(1, 5)
	return []grpc.ServerOption{grpc.InTapHandle(func(ctx context.Context, info *tap.Info) (context.Context, error) {
		return n.authorize(ctx, info.FullMethodName)
	})}
}
