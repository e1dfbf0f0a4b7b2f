package client

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	flatbuffers "github.com/google/flatbuffers/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/difuse/difuse/identity"
	"github.com/difuse/difuse/wire"
	"github.com/difuse/difuse/wire/fb"
)

// Admit asks the node at one of addrs (tried in turn) for a certificate
// issued to name, presenting tok, and returns the identity it gets. The
// connection trusts only a node that shows the CA tok pins. asClient asks
// for a client's certificate with a token that admits a node. It retries
// a node that cannot be reached until ctx ends; a refused token is final.
func Admit(ctx context.Context, addrs []string, tok identity.Token, name string, asClient bool) (*identity.Identity, error) {
	if len(addrs) == 0 {
		return nil, errors.New("client: no node address to join through")
	}
	key, err := identity.NewKey()
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, err
	}
	creds := credentials.NewTLS(identity.PinnedConfig(tok.CAHash))
	var lastErr error
	for attempt := 0; ; attempt++ {
		addr := addrs[attempt%len(addrs)]
		id, err := admitAt(ctx, addr, creds, tok, name, pub, asClient, key)
		if err == nil {
			return id, nil
		}
		lastErr = err
		if errors.Is(err, identity.ErrToken) || errors.Is(err, errRefused) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("client: join through %v: %w", addrs, lastErr)
		case <-time.After(min(time.Duration(attempt+1)*100*time.Millisecond, time.Second)):
		}
	}
}

// errRefused marks a node's refusal, as opposed to a failure to reach it.
var errRefused = errors.New("refused")

func admitAt(ctx context.Context, addr string, creds credentials.TransportCredentials, tok identity.Token, name string, pub []byte, asClient bool, key crypto.Signer) (*identity.Identity, error) {
	cc, err := grpc.NewClient(addr, wire.DialOptions(creds)...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer cc.Close()
	b := flatbuffers.NewBuilder(256 + len(pub))
	t, n, k := b.CreateString(tok.String()), b.CreateString(name), b.CreateByteVector(pub)
	fb.JoinRequestStart(b)
	fb.JoinRequestAddToken(b, t)
	fb.JoinRequestAddName(b, n)
	fb.JoinRequestAddPublicKey(b, k)
	fb.JoinRequestAddClient(b, asClient)
	b.Finish(fb.JoinRequestEnd(b))
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	r, err := fb.NewJoinClient(cc).Admit(actx, b)
	if err != nil {
		if refusal(err) {
			return nil, fmt.Errorf("join through %s: %w: %w", addr, errRefused, err)
		}
		return nil, fmt.Errorf("join through %s: %w", addr, err)
	}
	id, err := identity.Joined(r.CaBytes(), r.CertBytes(), key, r.CaKeyBytes())
	if err != nil {
		return nil, fmt.Errorf("join through %s: %w", addr, err)
	}
	if id.CAHash() != tok.CAHash {
		return nil, fmt.Errorf("join through %s: %w: the certificate is of another CA than the token's", addr, errRefused)
	}
	return id, nil
}

// refusal reports whether a node answered a join with a refusal.
func refusal(err error) bool {
	switch status.Code(err) {
	case codes.PermissionDenied, codes.Unauthenticated, codes.InvalidArgument:
		return true
	}
	return false
}
