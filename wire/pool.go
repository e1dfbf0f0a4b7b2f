package wire

import (
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// ErrPoolClosed is returned by a Pool's Get after Close.
var ErrPoolClosed = errors.New("wire: connection pool closed")

// Pool keeps one client connection per address, shared by every service
// that calls it (the ring, the transaction logs, the block store), so a
// node holds one HTTP/2 connection per peer. It is safe for concurrent use.
type Pool struct {
	creds  credentials.TransportCredentials
	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

// NewPool returns a pool with no connections yet, whose connections use
// creds (see DialOptions).
func NewPool(creds credentials.TransportCredentials) *Pool {
	return &Pool{creds: creds, conns: map[string]*grpc.ClientConn{}}
}

// Get returns the connection to addr, creating it on first use. Creating
// one does not dial: the first call does, within its own deadline.
func (p *Pool) Get(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrPoolClosed
	}
	if cc, ok := p.conns[addr]; ok {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, DialOptions(p.creds)...)
	if err != nil {
		return nil, fmt.Errorf("wire: connection to %s: %w", addr, err)
	}
	p.conns[addr] = cc
	return cc, nil
}

// Close closes every connection; later calls to Get fail.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for addr, cc := range p.conns {
		cc.Close()
		delete(p.conns, addr)
	}
	return nil
}
