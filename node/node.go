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
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/difuse/difuse/access"
	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/blockstore/blockrpc"
	"github.com/difuse/difuse/client"
	"github.com/difuse/difuse/gc"
	"github.com/difuse/difuse/gc/gcrpc"
	"github.com/difuse/difuse/heal"
	"github.com/difuse/difuse/heal/healrpc"
	"github.com/difuse/difuse/identity"
	"github.com/difuse/difuse/inode"
	"github.com/difuse/difuse/internal/cli"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/ring/ringrpc"
	"github.com/difuse/difuse/store"
	"github.com/difuse/difuse/store/badgerdb"
	"github.com/difuse/difuse/txlog"
	"github.com/difuse/difuse/txlog/txlogrpc"
	"github.com/difuse/difuse/wire"
	"github.com/difuse/difuse/wire/fb"
)

// Config configures a node. Zero values pick the defaults given beside each
// field.
type Config struct {
	// GRPCAddr is the address to serve gRPC on. Default 127.0.0.1:4624.
	GRPCAddr string
	// Advertise is the gRPC address other nodes reach this one at, and what
	// its vnode ids derive from. Default: the address GRPCAddr bound, which
	// must then be a specific IP, not a wildcard.
	Advertise string
	// HTTPAddr is the address to serve HTTP on. Default 127.0.0.1:9090.
	HTTPAddr string
	// OpenStatus serves the status (/v1/status, /v1/cluster) and the
	// metrics to requests without a token, for a trusted network; every
	// other request needs one.
	OpenStatus bool
	// Join is the gRPC address of a node of the cluster to join; empty
	// starts a new cluster, or rejoins the one the node was in before.
	Join string
	// Token is the join token that admits a node joining a cluster for the
	// first time (see identity); a node that holds its certificate needs
	// none.
	Token string
	// JoinTimeout bounds the attempts to join. Default 10s.
	JoinTimeout time.Duration
	// Leave makes a stopping node leave the ring gracefully and hand off
	// everything it holds to the hosts that take its place, instead of
	// just going away (and coming back on restart).
	Leave bool
	// LeaveTimeout bounds a hand-off. Default 1 hour.
	LeaveTimeout time.Duration
	// Heal configures healing; its Addr, Replicas and Logger are set by the
	// node.
	Heal heal.Config
	// GC configures garbage collection; its Addr, Logger and Clock are
	// set by the node.
	GC gc.Config
	// Compact configures the compaction of this node's transaction logs.
	Compact Compaction
	// Ring configures the ring; its Addr and Logger are set by the node.
	Ring ring.Config
	// Store configures the local database; Store.Dir is required.
	Store badgerdb.Options
	// MaxValueBytes bounds one key-value value, and the values of one
	// transaction together. Default 1 MiB.
	MaxValueBytes int
	// UnsafeLocalReads plants a bug in the transaction logs (see
	// txlog.Config); only the Jepsen harness's own test sets it.
	UnsafeLocalReads bool
	// UnsafeForgetPromises plants a bug in the transaction logs (see
	// txlog.Config); only the fault-injection harness sets it.
	UnsafeForgetPromises bool
	// Clock is the node's wall clock, by which its transaction logs stamp
	// entries and reckon retention, its blocks note their uses and its
	// garbage collector reckons blocks' ages; a test sets it to skew one
	// node's clock. Default time.Now.
	Clock func() time.Time
	// MaxBlockBytes bounds a block stored through HTTP. Default 4 MiB, the
	// largest block chunking makes.
	MaxBlockBytes int64
	// RequestTimeout bounds a client's request, retries included, where the
	// client gives no deadline of its own. Default 10s.
	RequestTimeout time.Duration
	// ShutdownTimeout bounds a graceful stop; in-flight calls still running
	// then are cut off. Default 10s.
	ShutdownTimeout time.Duration
	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger
}

// validate fills in the defaults and checks the configuration.
func (c *Config) validate() error {
	if c.GRPCAddr == "" {
		c.GRPCAddr = "127.0.0.1:4624"
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = "127.0.0.1:9090"
	}
	if c.JoinTimeout == 0 {
		c.JoinTimeout = 10 * time.Second
	}
	if c.LeaveTimeout == 0 {
		c.LeaveTimeout = time.Hour
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.MaxValueBytes == 0 {
		c.MaxValueBytes = 1 << 20
	}
	if c.MaxBlockBytes == 0 {
		c.MaxBlockBytes = blockstore.DefaultMaxChunk
	}
	if c.Compact.Interval == 0 {
		c.Compact.Interval = 10 * time.Minute
	}
	if c.Compact.Retention == (txlog.Retention{}) {
		c.Compact.Retention = txlog.DefaultRetention
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Store.Logger == nil {
		c.Store.Logger = c.Logger
	}
	switch {
	case c.Compact.Interval < 0 && c.Compact.Interval != NoCompaction:
		return fmt.Errorf("%w: Compaction.Interval %s must be positive, or NoCompaction", ErrConfig, c.Compact.Interval)
	case c.Compact.Retention.Keep < 1 || c.Compact.Retention.For < MinRetention:
		return fmt.Errorf("%w: Compaction.Retention must keep at least 1 version and everything for at least %s (a retry must find its write's first attempt)", ErrConfig, MinRetention)
	case c.JoinTimeout < 0 || c.LeaveTimeout < 0 || c.ShutdownTimeout < 0 || c.RequestTimeout < 0:
		return fmt.Errorf("%w: negative timeout", ErrConfig)
	case c.MaxValueBytes < 0 || c.MaxBlockBytes < 0:
		return fmt.Errorf("%w: negative MaxValueBytes or MaxBlockBytes", ErrConfig)
	}
	return nil
}

// ErrConfig wraps the error of a node whose configuration is invalid
// (its own, or that of its ring, healer or collector).
var ErrConfig = errors.New("invalid configuration")

// ErrListen wraps the error of a node that cannot bind its addresses.
var ErrListen = errors.New("cannot listen")

// ErrJoin wraps the error of a node that cannot join the cluster it was
// told to join.
var ErrJoin = errors.New("cannot join")

// ExitCode returns the exit code of a command whose node could not start
// or run with err.
func ExitCode(err error) int {
	switch {
	case errors.Is(err, store.ErrNoDir), errors.Is(err, store.ErrLocked), errors.Is(err, store.ErrNoSpace),
		errors.Is(err, os.ErrPermission):
		return cli.ExitDataDir
	case errors.Is(err, ErrListen):
		return cli.ExitListen
	case errors.Is(err, ErrJoin):
		return cli.ExitJoin
	case errors.Is(err, ErrConfig):
		return cli.ExitUsage
	}
	return cli.ExitFailure
}

// Node is one difused: a local store, a place in the ring, and the
// transaction logs and blocks it replicates, served over gRPC and HTTP.
type Node struct {
	cfg     Config
	log     *slog.Logger
	recent  *recentLog // the latest warnings and errors logged
	metrics *metrics
	db      *badgerdb.DB
	id      string
	ident   *identity.Identity // the node's membership of the cluster
	// access is the node's copy of the cluster's revoked tokens and
	// removed members.
	access *accessList
	// creds are the node's credentials as a client of other nodes.
	creds credentials.TransportCredentials
	// refusals limits the logging of refused calls.
	refusals *rate.Limiter
	start    time.Time
	grpcLn   net.Listener
	httpLn   net.Listener
	grpcSrv  *grpc.Server
	httpSrv  *http.Server
	pool     *wire.Pool
	ring     *ring.Host
	txlog    *txlog.Service
	blocks   *blockstore.Service
	fs       *inode.FS
	healer   *heal.Healer
	gc       *gc.Collector
	compact  compactStats
	ringTr   ring.Transport
	// leaveReq is closed when a client asks the node to leave.
	leaveReq  chan struct{}
	leaveOnce sync.Once
	// leaveSeeds are the hosts a leaving node asks about the ring once it
	// is no longer in it.
	leaveSeeds []string
	// peers are the other hosts the ring shows here.
	peers peerSet
	// joinedVia is the host the node joined the ring through.
	joinedVia atomic.Pointer[string]
	fsInit    sync.Mutex
	fsDone    bool // the root directory is known to exist

	runOnce sync.Once
}

// New opens the node's store, binds its addresses and prepares its ring
// host. It does not serve or join until Run. Errors wrap store.ErrNoDir,
// store.ErrLocked, store.ErrNoSpace or ErrListen where one of those is the
// cause.
func New(cfg Config) (_ *Node, err error) {
	recent, next := &recentLog{}, slog.DiscardHandler
	if cfg.Logger != nil {
		next = cfg.Logger.Handler()
	}
	cfg.Logger = slog.New(recentHandler{next: next, log: recent})
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger, recent: recent, start: time.Now(), leaveReq: make(chan struct{}),
		peers: peerSet{changed: make(chan struct{}, 1)}}
	defer func() {
		if err != nil {
			n.closeResources()
		}
	}()
	if n.db, err = badgerdb.Open(cfg.Store); err != nil {
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
	advertise := cfg.Advertise
	if advertise == "" {
		advertise = n.grpcLn.Addr().String()
		if ip := n.grpcLn.Addr().(*net.TCPAddr).IP; ip.IsUnspecified() {
			return nil, fmt.Errorf("gRPC address %s: %w: a wildcard address needs an advertised address", advertise, ErrListen)
		}
	}
	if n.ident, err = loadIdentity(cfg, n.db.Dir(), advertise); err != nil {
		return nil, err
	}
	if err := ensureAdminToken(n.ident, n.db.Dir()); err != nil {
		return nil, err
	}
	if n.access, err = loadAccess(n.db.Dir()); err != nil {
		return nil, err
	}
	rc := cfg.Ring
	rc.Addr, rc.Logger = advertise, n.log.With("component", "ring")
	userOnChange := rc.OnChange
	if cfg.UnsafeLocalReads {
		n.log.Warn("UNSAFE: replicas answer reads from their own copies (a bug planted for the Jepsen harness's test)")
	}
	if cfg.UnsafeForgetPromises {
		n.log.Warn("UNSAFE: replicas forget their promises and accept entries of any ballot (a bug planted for the fault-injection harness)")
	}
	places := &placements{cache: map[placementKey]placement{}}
	rc.OnChange = func(c ring.Change) {
		places.forget()
		// A change of the hosts the ring shows, not every change of a
		// successor list (which goes on for seconds as a new ring
		// converges), delays the creation of partitions
		// (txlog.Config.CreationSettle), and is saved for the next start.
		known := n.ring.KnownHosts()
		n.txlog.NoteHosts(len(known) + 1)
		if n.peers.update(known) {
			n.txlog.NoteRingChange()
		}
		if n.healer != nil {
			n.healer.Wake()
		}
		if userOnChange != nil {
			userOnChange(c)
		}
	}
	clientTLS := n.ident.ClientConfig()
	clientTLS.VerifyConnection = n.access.verifyConnection
	n.creds = credentials.NewTLS(clientTLS)
	n.pool = wire.NewPool(n.creds)
	n.ringTr = ringrpc.NewTransport(n.pool)
	if n.ring, err = ring.New(rc, n.ringTr); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	places.ring = n.ring
	rc = n.ring.Config()
	n.metrics = newMetrics(n)
	// A partition is created once the ring has been still for four of its
	// maintenance rounds: long enough for the hosts' views to agree after
	// a change.
	tc := txlog.Config{Addr: advertise, Replicas: rc.Replicas, CallTimeout: rc.CallTimeout, MaxValueBytes: cfg.MaxValueBytes, Observe: n.metrics.observeTxn,
		CreationSettle:   4 * rc.TickInterval,
		UnsafeLocalReads: cfg.UnsafeLocalReads, UnsafeForgetPromises: cfg.UnsafeForgetPromises, Clock: cfg.Clock, Logger: n.log.With("component", "txlog")}
	if n.txlog, err = txlog.New(tc, places, txlogrpc.NewTransport(n.pool), n.db); err != nil {
		return nil, err
	}
	local, err := blockstore.OpenLocal(filepath.Join(n.db.Dir(), "blocks"), n.db.CheckSpace)
	if err != nil {
		return nil, err
	}
	local.SetClock(cfg.Clock)
	bc := blockstore.Config{Addr: advertise, Replicas: rc.Replicas, CallTimeout: rc.CallTimeout, Logger: n.log.With("component", "blocks"), Observe: n.metrics.observeBlock}
	if n.blocks, err = blockstore.New(bc, places, blockrpc.NewTransport(n.pool), local); err != nil {
		return nil, err
	}
	if n.fs, err = inode.New(n.txlog, n.blocks, inode.Options{}); err != nil {
		return nil, err
	}
	hc := cfg.Heal
	hc.Addr, hc.Replicas, hc.Logger, hc.LeftAt = advertise, rc.Replicas, n.log.With("component", "heal"), n.ring.LeftAt
	healTr := healrpc.NewTransport(n.pool)
	if n.healer, err = heal.New(hc, n.members, places, n.txlog, n.blocks, healTr); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	serverTLS := n.ident.ServerConfig()
	serverTLS.VerifyConnection = n.access.verifyConnection
	opts := append(wire.ServerOptions(n.log), grpc.Creds(credentials.NewTLS(serverTLS)))
	opts = append(append(opts, n.metrics.serverOptions()...), n.authOptions()...)
	n.grpcSrv = grpc.NewServer(opts...)
	fb.RegisterJoinServer(n.grpcSrv, joinService{n: n})
	fb.RegisterPeerServer(n.grpcSrv, peerService{n: n})
	fb.RegisterClientServer(n.grpcSrv, clientService{n: n})
	ringrpc.Register(n.grpcSrv, n.ring)
	txlogrpc.Register(n.grpcSrv, n.txlog)
	blockrpc.Register(n.grpcSrv, n.blocks)
	healrpc.Register(n.grpcSrv, healService{n})
	gcc := cfg.GC
	gcc.Addr, gcc.Logger, gcc.Clock = advertise, n.log.With("component", "gc"), cfg.Clock
	if n.gc, err = gc.New(gcc, n.members, healTr, n.txlog, gcrpc.NewTransport(n.pool), n.blocks); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	gcrpc.Register(n.grpcSrv, n.gc)
	n.httpSrv = &http.Server{Handler: n.httpHandler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	return n, nil
}

// idKey is where a node keeps its identity in its store.
var idKey = []byte("node/id")

// loadID returns the node's identity, choosing and storing a random one on
// the first start.
func loadID(db *badgerdb.DB) (string, error) {
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

// Identity returns the node's membership of its cluster: its certificate,
// the CA's, and the CA's key, with which it admits others.
func (n *Node) Identity() *identity.Identity { return n.ident }

// GRPCAddr returns the address the gRPC server listens on.
func (n *Node) GRPCAddr() string { return n.grpcLn.Addr().String() }

// HTTPAddr returns the address the HTTP server listens on.
func (n *Node) HTTPAddr() string { return n.httpLn.Addr().String() }

// Ring returns the node's ring host.
func (n *Node) Ring() *ring.Host { return n.ring }

// TxLog returns the node's transaction-log service.
func (n *Node) TxLog() *txlog.Service { return n.txlog }

// Blocks returns the node's block service.
func (n *Node) Blocks() *blockstore.Service { return n.blocks }

// Run serves gRPC and HTTP, joins the ring (or creates one), and maintains
// it until ctx is done or a server fails. Then it shuts down: it leaves the
// ring if configured to, stops taking calls, waits up to ShutdownTimeout for
// the calls in flight, and closes the store. A failure to join returns an
// error wrapping ErrJoin. Run may be called once.
func (n *Node) Run(ctx context.Context) error {
	err := errors.New("node: Run called twice")
	n.runOnce.Do(func() { err = n.run(ctx) })
	return err
}

func (n *Node) run(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- n.grpcSrv.Serve(n.grpcLn) }()
	go func() { errc <- n.httpSrv.Serve(n.httpLn) }()

	var runErr error
	if err := n.joinOrCreate(ctx); err != nil {
		runErr = err
	} else {
		n.savePeers() // a node killed right after joining must still find its way back
		n.log.Info("node serving", "id", n.id, "grpc", n.ring.Addr(), "http", n.HTTPAddr(), "dir", n.db.Dir())
		rctx, stopRing := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { n.ring.Run(rctx) })
		wg.Go(func() { n.rememberPeers(rctx) })
		wg.Go(func() { n.healer.Run(rctx) })
		wg.Go(func() { n.gc.Run(rctx) })
		wg.Go(func() { n.compactLoop(rctx) })
		wg.Go(func() { n.refreshAccess(rctx) })
		leave := n.cfg.Leave
		select {
		case <-ctx.Done():
		case <-n.leaveReq:
			leave = true
		case err := <-errc:
			runErr = fmt.Errorf("serve: %w", err)
		}
		stopRing()
		wg.Wait()
		n.log.Info("node stopping", "id", n.id)
		if leave && runErr == nil {
			runErr = n.leave()
		}
		n.savePeers()
	}

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
	n.txlog.Close()
	n.blocks.Wait()
	n.pool.Close()
	if err := n.db.Close(); err != nil && runErr == nil {
		runErr = err
	}
	n.log.Info("node stopped", "id", n.id)
	return runErr
}

// leave takes the node out of the ring, then hands off everything it
// holds to the hosts the ring now names, while it goes on answering the
// other nodes' calls.
func (n *Node) leave() error {
	n.leaveSeeds = n.ring.KnownHosts()
	lctx, cancel := context.WithTimeout(context.Background(), n.cfg.ShutdownTimeout)
	n.ring.Leave(lctx)
	cancel()
	if others, want := len(n.leaveSeeds), n.ring.Config().Replicas; others < want {
		// Replica sets do not shrink below N hosts (see txlog), so nothing
		// could take this node's place in them.
		n.log.Error("left the ring without handing off: fewer nodes than the replica count are left", "others", others, "replicas", want)
		return nil
	}
	n.log.Info("left the ring; handing off", "to", n.leaveSeeds)
	hctx, cancel := context.WithTimeout(context.Background(), n.cfg.LeaveTimeout)
	defer cancel()
	if err := n.healer.Leave(hctx); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	if err := n.recordLeft(hctx); err != nil {
		n.log.Error("handed off everything, but could not record the node's removal: its certificate is still valid", "err", err)
		return nil
	}
	n.log.Info("handed off everything; stopping")
	return nil
}

// recordLeft records in the cluster's access record that this node left,
// through the nodes it knew: its certificate is refused from then on.
func (n *Node) recordLeft(ctx context.Context) error {
	c, err := client.DialCluster(ctx, n.leaveSeeds, n.creds)
	if err != nil {
		return err
	}
	defer c.Close()
	return access.Remove(ctx, c, n.ident.Name(), time.Now().UTC())
}

// members returns the ring's vnodes, walking it from this host or, once
// it has left, from the hosts it knew.
func (n *Node) members(ctx context.Context) ([]ring.Ref, error) {
	var seeds []string
	if n.ring.Member() {
		seeds = append(seeds, n.ring.Addr())
	}
	seeds = append(seeds, n.ring.KnownHosts()...)
	seeds = append(seeds, n.leaveSeeds...)
	return ring.Members(ctx, n.ringTr, seeds)
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
