package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/difuse/difuse/client"
	"github.com/difuse/difuse/store"
	"github.com/difuse/difuse/wire"
	"github.com/difuse/difuse/wire/fb"
)

// Config configures a node. Zero values pick the defaults given beside each
// field.
type Config struct {
	// GRPCAddr is the address to serve gRPC on. Default 127.0.0.1:4624.
	GRPCAddr string
	// HTTPAddr is the address to serve HTTP on. Default 127.0.0.1:9090.
	HTTPAddr string
	// Join is the gRPC address of a node of the cluster to join; empty
	// starts a new cluster.
	Join string
	// Store configures the local database; Store.Dir is required.
	Store store.Options
	// JoinTimeout bounds the wait for the node given in Join. Default 10s.
	JoinTimeout time.Duration
	// ShutdownTimeout bounds a graceful stop; in-flight calls still running
	// then are cut off. Default 10s.
	ShutdownTimeout time.Duration
	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.GRPCAddr == "" {
		c.GRPCAddr = "127.0.0.1:4624"
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = "127.0.0.1:9090"
	}
	if c.JoinTimeout == 0 {
		c.JoinTimeout = 10 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Store.Logger == nil {
		c.Store.Logger = c.Logger
	}
}

// ErrListen wraps the error of a node that cannot bind its addresses.
var ErrListen = errors.New("cannot listen")

// ErrJoin wraps the error of a node that cannot reach the node it was told
// to join.
var ErrJoin = errors.New("cannot join")

// Node is one difused: a local store served over gRPC and HTTP.
type Node struct {
	cfg     Config
	log     *slog.Logger
	db      *store.DB
	id      string
	start   time.Time
	grpcLn  net.Listener
	httpLn  net.Listener
	grpcSrv *grpc.Server
	httpSrv *http.Server

	runOnce sync.Once
}

// New opens the node's store and binds its addresses. It does not serve
// until Run. Errors wrap store.ErrNoDir, store.ErrLocked, store.ErrNoSpace,
// ErrListen or ErrJoin where one of those is the cause.
func New(cfg Config) (_ *Node, err error) {
	cfg.setDefaults()
	n := &Node{cfg: cfg, log: cfg.Logger, start: time.Now()}
	defer func() {
		if err != nil {
			n.closeResources()
		}
	}()
	if n.db, err = store.Open(cfg.Store); err != nil {
		return nil, err
	}
	if n.id, err = loadID(n.db); err != nil {
		return nil, err
	}
	if n.grpcLn, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		return nil, fmt.Errorf("gRPC address: %w: %w", ErrListen, err)
	}
	if n.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("HTTP address: %w: %w", ErrListen, err)
	}
	if cfg.Join != "" {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.JoinTimeout)
		defer cancel()
		peer, err := pingOnce(ctx, cfg.Join)
		if err != nil {
			return nil, fmt.Errorf("%w %s: %w", ErrJoin, cfg.Join, err)
		}
		n.log.Info("reached the node to join", "peer", peer.ID, "addr", cfg.Join)
	}
	n.grpcSrv = grpc.NewServer(wire.ServerOptions(n.log)...)
	fb.RegisterPeerServer(n.grpcSrv, peerService{n: n})
	fb.RegisterClientServer(n.grpcSrv, clientService{n: n})
	n.httpSrv = &http.Server{Handler: n.httpHandler(), ReadHeaderTimeout: 10 * time.Second}
	return n, nil
}

func pingOnce(ctx context.Context, addr string) (client.NodeInfo, error) {
	c, err := client.Dial(addr)
	if err != nil {
		return client.NodeInfo{}, err
	}
	defer c.Close()
	return c.Ping(ctx)
}

// idKey is where a node keeps its identity in its store.
var idKey = []byte("node/id")

// loadID returns the node's identity, choosing and storing a random one on
// the first start.
func loadID(db *store.DB) (string, error) {
	id, err := db.Get(idKey)
	if err == nil {
		return string(id), nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return "", fmt.Errorf("read node id: %w", err)
	}
	var b [8]byte
	rand.Read(b[:])
	newID := hex.EncodeToString(b[:])
	if err := db.Update(func(w store.Writer) error { return w.Set(idKey, []byte(newID)) }); err != nil {
		return "", fmt.Errorf("store node id: %w", err)
	}
	if err := db.Sync(); err != nil {
		return "", fmt.Errorf("store node id: %w", err)
	}
	return newID, nil
}

// ID returns the node's permanent identity.
func (n *Node) ID() string { return n.id }

// GRPCAddr returns the address the gRPC server listens on.
func (n *Node) GRPCAddr() string { return n.grpcLn.Addr().String() }

// HTTPAddr returns the address the HTTP server listens on.
func (n *Node) HTTPAddr() string { return n.httpLn.Addr().String() }

// Run serves gRPC and HTTP until ctx is done or a server fails, then shuts
// down: it stops taking calls, waits up to ShutdownTimeout for the calls in
// flight, and closes the store. Run may be called once.
func (n *Node) Run(ctx context.Context) error {
	err := errors.New("node: Run called twice")
	n.runOnce.Do(func() { err = n.run(ctx) })
	return err
}

func (n *Node) run(ctx context.Context) error {
	n.log.Info("node serving", "id", n.id, "grpc", n.GRPCAddr(), "http", n.HTTPAddr(), "dir", n.db.Dir())
	errc := make(chan error, 2)
	go func() { errc <- n.grpcSrv.Serve(n.grpcLn) }()
	go func() { errc <- n.httpSrv.Serve(n.httpLn) }()
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		serveErr = fmt.Errorf("serve: %w", serveErr)
	}
	n.log.Info("node stopping", "id", n.id)
	sctx, cancel := context.WithTimeout(context.Background(), n.cfg.ShutdownTimeout)
	defer cancel()
	stopped := make(chan struct{})
	go func() { n.grpcSrv.GracefulStop(); close(stopped) }()
	if err := n.httpSrv.Shutdown(sctx); err != nil {
		n.httpSrv.Close()
	}
	select {
	case <-stopped:
	case <-sctx.Done():
		n.grpcSrv.Stop()
		<-stopped
	}
	if err := n.db.Close(); err != nil && serveErr == nil {
		serveErr = err
	}
	n.log.Info("node stopped", "id", n.id)
	return serveErr
}

// closeResources releases what New opened, for a New that failed half way.
func (n *Node) closeResources() {
	for _, ln := range []net.Listener{n.grpcLn, n.httpLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if n.db != nil {
		n.db.Close()
	}
}
