// Command difuse-mount mounts a difuse filesystem:
//
//	difuse-mount [-d data-dir] [flags] MOUNTPOINT
//
// With -j it talks to an existing cluster as a client, through the nodes
// given and those it learns from them; the first time, a join token
// (-token, -token-file or DIFUSE_TOKEN) gets it a client's certificate,
// which it keeps in its data directory. Without -j it runs an embedded
// single node on the data directory, so one command gives a working mount.
// It serves the filesystem at MOUNTPOINT until SIGINT or SIGTERM, when it
// unmounts.
//
// Exit codes: 0 success, 1 other failure, 2 bad usage, 3 data directory
// missing, locked or full, 4 address unavailable, 5 cluster unreachable,
// 6 mountpoint or FUSE unusable.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"
	"google.golang.org/grpc/credentials"

	"github.com/difuse/difuse/client"
	"github.com/difuse/difuse/fsnode"
	"github.com/difuse/difuse/identity"
	"github.com/difuse/difuse/inode"
	"github.com/difuse/difuse/internal/cli"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/node"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/store/badgerdb"
)

func main() {
	if strings.HasPrefix(filepath.Base(os.Args[0]), "mount.") {
		os.Exit(mountHelper(os.Args[1:], os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stderr))
}

// options are difuse-mount's flags.
type options struct {
	join, dir, grpcAddr, httpAddr, logLevel string
	token, tokenFile                        string
	metricsAddr                             string
	attrValid, entryValid                   time.Duration
	readLevel, writeLevel                   string
	blockReadLevel, blockWriteLevel         string
	cacheBlocks, flushMiB, memoryMiB        int
	stallTimeout                            time.Duration
	allowOther                              bool
}

// newFlags defines difuse-mount's flags into o.
func newFlags(o *options, stderr io.Writer) *flag.FlagSet {
	flags := flag.NewFlagSet("difuse-mount", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() {
		fmt.Fprintf(stderr, "Usage: difuse-mount [flags] MOUNTPOINT\n\nFlags:\n")
		flags.PrintDefaults()
	}
	flags.StringVar(&o.join, "j", "", "gRPC `addresses` (comma-separated) of nodes of a cluster to use; none: run an embedded node")
	flags.StringVar(&o.dir, "d", "", "data `directory` of the embedded node (default $XDG_DATA_HOME/difuse/mount, else ~/.local/share/difuse/mount); with -j, where the mount keeps its certificate (default .../difuse/client)")
	flags.StringVar(&o.token, "token", "", "with -j, the join `token` that admits the mount (also DIFUSE_TOKEN); needed once, the mount keeps its certificate")
	flags.StringVar(&o.tokenFile, "token-file", "", "`file` holding the join token")
	flags.StringVar(&o.grpcAddr, "b", "127.0.0.1:4644", "gRPC `address` of the embedded node; keep it the same across runs")
	flags.StringVar(&o.httpAddr, "a", "127.0.0.1:9144", "HTTP `address` of the embedded node")
	flags.DurationVar(&o.attrValid, "attr-valid", time.Second, "how long the kernel caches attributes")
	flags.DurationVar(&o.entryValid, "entry-valid", time.Second, "how long the kernel caches names")
	flags.StringVar(&o.readLevel, "read-level", "leader", "consistency `level` of lookups, attribute reads and listings: all, quorum, leader or lazy")
	flags.StringVar(&o.writeLevel, "write-level", "quorum", "consistency `level` of metadata changes: all, quorum, leader or lazy")
	flags.StringVar(&o.blockReadLevel, "block-read-level", "leader", "consistency `level` of block reads")
	flags.StringVar(&o.blockWriteLevel, "block-write-level", "quorum", "consistency `level` of block writes")
	flags.IntVar(&o.cacheBlocks, "cache-blocks", 32, "how many blocks (about 1 MiB each) reads keep in memory")
	flags.IntVar(&o.flushMiB, "flush-mib", 64, "MiB an open file buffers before it commits them in the background while the next collect (so it holds up to twice this; at most a quarter of -memory-mib)")
	flags.IntVar(&o.memoryMiB, "memory-mib", 256, "MiB the mount's buffers and caches keep to: open files buffer up to half, reads cache up to a quarter; with -j also the Go runtime's soft memory limit")
	flags.DurationVar(&o.stallTimeout, "stall-timeout", 2*time.Minute, "how long a commit of written data (close, fsync) may go without progress before it fails with EIO; a slow commit that moves never does")
	flags.BoolVar(&o.allowOther, "allow-other", false, "let users other than the one mounting use the mount, the kernel checking modes and owners (default: on when mounting as root, as for fstab mounts)")
	flags.StringVar(&o.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	flags.StringVar(&o.metricsAddr, "metrics", "", "serve Prometheus metrics of the mount (FUSE operations, block cache) at http://`address`/metrics; none: do not")
	return flags
}

// clientCreds returns the credentials of a mount of a cluster: the
// certificate kept in the data directory, or one the cluster issues for
// the join token given, which is then kept there.
func (o *options) clientCreds(ctx context.Context) (credentials.TransportCredentials, error) {
	dir := o.dir
	if dir == "" {
		var err error
		if dir, err = cli.DataDir("client"); err != nil {
			return nil, err
		}
	}
	id, err := identity.Load(dir)
	if errors.Is(err, identity.ErrNone) {
		tok, terr := cli.Token(o.token, o.tokenFile)
		if terr != nil {
			return nil, terr
		}
		if tok == "" {
			return nil, fmt.Errorf("no certificate in %s and no join token given (-token, -token-file or DIFUSE_TOKEN)", dir)
		}
		t, perr := identity.ParseToken(tok)
		if perr != nil {
			return nil, perr
		}
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		name, _ := os.Hostname()
		if id, err = client.Admit(actx, strings.Split(o.join, ","), t, "mount@"+name, true); err != nil {
			return nil, err
		}
		err = id.Save(dir)
	}
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(id.ClientConfig()), nil
}

// inodeOptions returns the filesystem's options from the flags.
func (o *options) inodeOptions() (inode.Options, error) {
	var lv inode.Levels
	for _, l := range []struct {
		flag, value string
		to          *level.Level
	}{
		{"read-level", o.readLevel, &lv.Read}, {"write-level", o.writeLevel, &lv.Write},
		{"block-read-level", o.blockReadLevel, &lv.Blocks}, {"block-write-level", o.blockWriteLevel, &lv.BlockWrite},
	} {
		v, err := level.Parse(l.value, 0)
		if err != nil {
			return inode.Options{}, fmt.Errorf("-%s: %w", l.flag, err)
		}
		*l.to = v
	}
	if o.cacheBlocks < 1 || o.flushMiB < 1 || o.memoryMiB < 16 || o.stallTimeout <= 0 {
		return inode.Options{}, fmt.Errorf("-cache-blocks and -flush-mib must be at least 1, -memory-mib at least 16, -stall-timeout above 0")
	}
	return inode.Options{Levels: &lv, CacheBlocks: o.cacheBlocks, CacheBytes: int64(o.memoryMiB) << 20 / 4}, nil
}

// fsnodeOptions returns the FUSE layer's options from the flags: open
// files buffer up to half of -memory-mib, each up to a quarter.
func (o *options) fsnodeOptions() fsnode.Options {
	mem := int64(o.memoryMiB) << 20
	return fsnode.Options{AttrValid: o.attrValid, EntryValid: o.entryValid, StallTimeout: o.stallTimeout,
		FlushBytes: int(min(int64(o.flushMiB)<<20, mem/4)), DirtyBytes: mem / 2}
}

// setAllowOther settles -allow-other when it was not given: a mount made
// by root (from fstab, or by an administrator for a machine's users)
// serves every user, the kernel checking modes and owners as on any
// filesystem; a user's own mount serves that user alone, which it says,
// since other users would meet EACCES everywhere.
func setAllowOther(o *options, flags *flag.FlagSet, euid int, log *slog.Logger) {
	given := false
	flags.Visit(func(f *flag.Flag) { given = given || f.Name == "allow-other" })
	switch {
	case !given && euid == 0:
		o.allowOther = true
		log.Info("mounting for every user, the kernel checking modes and owners (allow_other, default_permissions); -allow-other=false keeps the mount to root")
	case !o.allowOther && euid == 0:
		log.Warn("only root can use this mount: other users get EACCES on every operation (-allow-other=false)")
	case !o.allowOther:
		log.Warn("only this user can use this mount: other users get EACCES on every operation; -allow-other lets them in (it needs user_allow_other in /etc/fuse.conf)", "uid", euid)
	}
}

// unmountWait bounds how long an unmount waits for the kernel to let go.
const unmountWait = 10 * time.Second

func run(args []string, stderr io.Writer) int {
	var o options
	flags := newFlags(&o, stderr)
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return cli.ExitUsage
	}
	if flags.NArg() != 1 {
		flags.Usage()
		return cli.ExitUsage
	}
	mountpoint := flags.Arg(0)
	log, err := cli.NewLogger(stderr, o.logLevel, false)
	if err != nil {
		fmt.Fprintln(stderr, "difuse-mount:", err)
		return cli.ExitUsage
	}
	setAllowOther(&o, flags, os.Geteuid(), log)
	iopts, err := o.inodeOptions()
	if err != nil {
		fmt.Fprintln(stderr, "difuse-mount:", err)
		return cli.ExitUsage
	}
	if st, err := os.Stat(mountpoint); err != nil || !st.IsDir() {
		fmt.Fprintf(stderr, "difuse-mount: mountpoint %s is not a directory\n", mountpoint)
		return cli.ExitMount
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		fmt.Fprintln(stderr, "difuse-mount: FUSE is not available here (/dev/fuse is missing; install fuse3)")
		return cli.ExitMount
	}
	var metricsLn net.Listener
	if o.metricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", o.metricsAddr); err != nil {
			fmt.Fprintf(stderr, "difuse-mount: -metrics: %v\n", err)
			return cli.ExitListen
		}
		defer metricsLn.Close()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var ifs *inode.FS
	var capacity func(context.Context) (uint64, uint64, error)
	var nodeDone chan error // the embedded node's end, if there is one
	if o.join != "" {
		creds, err := o.clientCreds(ctx)
		if err != nil {
			log.Error("cannot join the cluster", "nodes", o.join, "err", err)
			return cli.ExitJoin
		}
		cl, err := client.DialCluster(ctx, strings.Split(o.join, ","), creds)
		if err != nil {
			log.Error("cannot reach the cluster", "nodes", o.join, "err", err)
			return cli.ExitJoin
		}
		defer cl.Close()
		if ifs, err = inode.New(cl, cl, iopts); err != nil {
			fmt.Fprintln(stderr, "difuse-mount:", err)
			return cli.ExitUsage
		}
		capacity = cl.Capacity
	} else {
		if o.dir == "" {
			if o.dir, err = cli.DataDir("mount"); err != nil {
				fmt.Fprintln(stderr, "difuse-mount:", err)
				return cli.ExitDataDir
			}
		}
		n, err := node.New(node.Config{GRPCAddr: o.grpcAddr, HTTPAddr: o.httpAddr, Store: badgerdb.Options{Dir: o.dir}, Ring: ring.Config{}, Logger: log})
		if err != nil {
			log.Error("cannot start the embedded node", "err", err)
			return node.ExitCode(err)
		}
		nodeDone = make(chan error, 1)
		go func() { nodeDone <- n.Run(ctx) }()
		for !n.Ring().Member() {
			select {
			case err := <-nodeDone:
				log.Error("the embedded node stopped", "err", err)
				return cli.ExitFailure
			case <-time.After(20 * time.Millisecond):
			}
		}
		n.TxLog().NoteHosts(1)
		if ifs, err = inode.New(n.TxLog(), n.Blocks(), iopts); err != nil {
			fmt.Fprintln(stderr, "difuse-mount:", err)
			stop()
			<-nodeDone
			return cli.ExitUsage
		}
		capacity = n.Capacity
	}
	// stopNode ends the embedded node, if any, and reports how it ended.
	stopNode := func() error {
		stop()
		if nodeDone == nil {
			return nil
		}
		return <-nodeDone
	}
	ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = ifs.Init(ictx)
	cancel()
	if err != nil {
		log.Error("cannot create the root directory", "err", err)
		stopNode()
		return cli.ExitFailure
	}

	// The kernel checks permissions against the modes and owners the
	// filesystem reports (default_permissions).
	mountOpts := []fuse.MountOption{fuse.FSName("difuse"), fuse.Subtype("difuse"), fuse.MaxReadahead(1 << 20), fuse.DefaultPermissions()}
	if o.allowOther {
		mountOpts = append(mountOpts, fuse.AllowOther())
	}
	conn, err := fuse.Mount(mountpoint, mountOpts...)
	if err != nil {
		log.Error("cannot mount", "mountpoint", mountpoint, "err", err)
		stopNode()
		return cli.ExitMount
	}
	fopts := o.fsnodeOptions()
	fopts.Capacity, fopts.Logger = capacity, log.With("component", "fuse")
	if o.join != "" && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(int64(o.memoryMiB) << 20)
	}
	if metricsLn != nil {
		m := newMountMetrics(ifs)
		fopts.Observe = m.observe
		defer m.serve(metricsLn).Close()
		log.Info("serving metrics", "url", "http://"+metricsLn.Addr().String()+"/metrics")
	}
	served := make(chan error, 1)
	go func() { served <- fs.Serve(conn, fsnode.New(ifs, fopts)) }()
	log.Info("mounted", "mountpoint", mountpoint, "dir", o.dir)

	code := 0
	select {
	case <-ctx.Done():
		// Unmount; a busy mountpoint is detached lazily so the process can end.
		if err := fuse.Unmount(mountpoint); err != nil {
			log.Warn("unmount failed; detaching lazily", "err", err)
			lazyUnmount(mountpoint)
		}
		// Serving ends once the kernel lets go of the mount. Closing the
		// connection before that would wait for it; if it takes long (files
		// still open on a lazy unmount), the process ends without waiting,
		// which closes the connection all the same.
		select {
		case <-served:
			conn.Close()
		case <-time.After(unmountWait):
			log.Warn("the kernel still holds the mount; exiting without waiting", "after", unmountWait)
		}
	case err := <-served:
		if err != nil {
			log.Error("serving stopped", "err", err)
			code = cli.ExitFailure
			lazyUnmount(mountpoint)
		} else {
			log.Info("unmounted from outside", "mountpoint", mountpoint)
		}
		conn.Close()
	}
	if err := stopNode(); err != nil {
		log.Error("the embedded node stopped with an error", "err", err)
		code = cli.ExitFailure
	}
	log.Info("unmounted", "mountpoint", mountpoint)
	return code
}
