package identity

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// ServerConfig is the TLS 1.3 configuration of a node's gRPC server. A
// client certificate is verified against the cluster's CA if one is
// given; a connection without one reaches only what the server lets
// strangers call (a join).
func (id *Identity) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.TLSCertificate()},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    id.pool(),
	}
}

// ClientConfig is the TLS 1.3 configuration of a member's connections to
// nodes: it shows the member's certificate and trusts only nodes the
// cluster's CA certified.
func (id *Identity) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.TLSCertificate()},
		RootCAs:      id.pool(),
		ServerName:   ServerName,
	}
}

// PinnedConfig is the TLS 1.3 configuration of a joiner, which has no
// certificate yet: it trusts a node whose chain ends in the CA the token
// pins.
func PinnedConfig(pin Hash) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // the chain is verified below, against the pinned CA
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) < 2 {
				return errors.New("identity: the node shows no CA")
			}
			if sha256.Sum256(raw[len(raw)-1]) != pin {
				return errors.New("identity: the node's CA is not the one the token names")
			}
			ca, err := x509.ParseCertificate(raw[len(raw)-1])
			if err != nil {
				return err
			}
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca)
			_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: ServerName})
			return err
		},
	}
}

// PeerCert returns the verified certificate of the caller of a gRPC
// handler; false if the caller showed none.
func PeerCert(ctx context.Context) (*x509.Certificate, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil, false
	}
	return info.State.VerifiedChains[0][0], true
}
