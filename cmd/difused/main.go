// Command difused is the difuse node daemon. Run with no subcommand it
// serves a node; its subcommands query running nodes:
//
//	difused [-b grpc-addr] [-a http-addr] [-j join-addr] [-d data-dir] [flags]
//	difused status [-b grpc-addr]
//	difused ping [-n count] [-size bytes] [grpc-addr]
//	difused leave [-b grpc-addr]
//	difused fsck [-b grpc-addrs] [-repair]
//	difused gc [-b grpc-addr] [-dry-run]
//
// Exit codes: 0 success, 1 other failure, 2 bad usage, 3 data directory
// missing, locked or full, 4 address unavailable, 5 cluster to join
// unreachable.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/difuse/difuse/gc"
	"github.com/difuse/difuse/heal"
	"github.com/difuse/difuse/internal/cli"
	"github.com/difuse/difuse/internal/skew"
	"github.com/difuse/difuse/node"
	"github.com/difuse/difuse/ring"
	"github.com/difuse/difuse/store/badgerdb"
	"github.com/difuse/difuse/txlog"
)

// defaultGRPC is the node's default gRPC address; the client subcommands
// talk to it unless told otherwise.
const defaultGRPC = "127.0.0.1:4624"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "status":
			return cmdStatus(args[1:], stdout, stderr)
		case "ping":
			return cmdPing(args[1:], stdout, stderr)
		case "leave":
			return cmdLeave(args[1:], stdout, stderr)
		case "fsck":
			return cmdFsck(args[1:], stdout, stderr)
		case "gc":
			return cmdGC(args[1:], stdout, stderr)
		case "token":
			return cmdToken(args[1:], stdout, stderr)
		case "remove":
			return cmdRemove(args[1:], stdout, stderr)
		}
	}
	return cmdServe(args, stderr)
}

func cmdServe(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("difused", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: difused [flags]          serve a node
       difused status [flags]   print a node's status
       difused ping [flags] ADDR measure round trips to a node
       difused leave [flags]    make a node hand off its data and leave
       difused fsck [flags]     check the filesystem (and repair it with -repair)
       difused gc [flags]       free the blocks no file refers to (-dry-run: list)
       difused remove [flags] NODE  remove a node that is gone for good
       difused token create|list|revoke [flags]  make, list and revoke tokens

Flags of difused:
`)
		fs.PrintDefaults()
	}
	grpcAddr := fs.String("b", defaultGRPC, "gRPC bind `address`")
	httpAddr := fs.String("a", "127.0.0.1:9090", "HTTP bind `address`")
	openStatus := fs.Bool("open-status", false, "serve the status and the metrics over HTTP without a token (on a trusted network); every other request needs one")
	join := fs.String("j", "", "gRPC `address` of a node of the cluster to join (none: start a new cluster)")
	dir := fs.String("d", "", "data `directory` (default $XDG_DATA_HOME/difuse/PORT, else ~/.local/share/difuse/PORT)")
	advertise := fs.String("advertise", "", "gRPC `address` other nodes reach this one at (default: the -b address)")
	token := fs.String("token", "", "join `token` that admits this node to the cluster at -j (also DIFUSE_TOKEN); needed once, the node keeps its certificate")
	tokenFile := fs.String("token-file", "", "`file` holding the join token")
	joinTimeout := fs.Duration("join-timeout", 10*time.Second, "how long to keep trying to join")
	leave := fs.Bool("leave", false, "on SIGINT/SIGTERM, leave the cluster for good: hand off everything this node holds to the nodes that take its place, then exit")
	leaveTimeout := fs.Duration("leave-timeout", time.Hour, "how long a hand-off may take")
	healInterval := fs.Duration("heal-interval", 30*time.Second, "pause between healing passes (anti-entropy, rebalancing, scrubbing)")
	healGrace := fs.Duration("heal-grace", 5*time.Minute, "how long a node may be gone before its data is copied to others")
	healMiB := fs.Int("heal-mibps", 64, "block bytes healing may send, in `MiB` per second")
	gcInterval := fs.Duration("gc-interval", time.Hour, "how often the background garbage collector runs (one node of the cluster at a time); 0: never")
	gcGrace := fs.Duration("gc-grace", time.Hour, "how long an unreferenced block is kept after its last use (longer than any write takes to commit)")
	gcRate := fs.Int("gc-rate", 20000, "blocks a sweep examines per second on each node")
	compactInterval := fs.Duration("compact-interval", 10*time.Minute, "how often the node compacts the transaction logs it holds; 0: never")
	logKeep := fs.Int("log-keep", txlog.DefaultRetention.Keep, "versions of each record whose transactions compaction keeps (at least 1)")
	logKeepFor := fs.Duration("log-keep-for", txlog.DefaultRetention.For, "how long compaction keeps every transaction (at least 30s: a client's retry must find the first attempt of its write)")
	scrubMiB := fs.Int64("scrub-mib", 256, "block bytes each healing pass re-hashes to find damaged copies, in `MiB` (0: none)")
	vnodes := fs.Int("vnodes", 8, "virtual nodes this node runs in the ring")
	replicas := fs.Int("replicas", 3, "replica count N of every key (odd)")
	tick := fs.Duration("tick", 500*time.Millisecond, "interval of the ring's maintenance (stabilise, fix fingers, check predecessor)")
	callTimeout := fs.Duration("call-timeout", time.Second, "timeout of one call to another node; a node that does not answer in time is taken for dead")
	minFree := fs.Int64("min-free-mb", 256, "free space in `MiB` kept in reserve on the data directory's file system")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn or error")
	logJSON := fs.Bool("log-json", false, "log JSON lines instead of text")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0 // help was asked for
		}
		return cli.ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "difused: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return cli.ExitUsage
	}
	log, err := cli.NewLogger(stderr, *logLevel, *logJSON)
	if err != nil {
		fmt.Fprintf(stderr, "difused: %v\n", err)
		return cli.ExitUsage
	}
	if *dir == "" {
		if *dir, err = cli.DataDir((*grpcAddr)[strings.LastIndex(*grpcAddr, ":")+1:]); err != nil {
			log.Error("no data directory", "err", err)
			return cli.ExitDataDir
		}
	}

	tok, err := cli.Token(*token, *tokenFile)
	if err != nil {
		fmt.Fprintf(stderr, "difused: %v\n", err)
		return cli.ExitUsage
	}
	// The flags' 0 turns a background job off; the configurations name
	// that explicitly.
	if *gcInterval == 0 {
		*gcInterval = gc.Off
	}
	if *compactInterval == 0 {
		*compactInterval = node.NoCompaction
	}
	scrubBytes := *scrubMiB << 20
	if *scrubMiB == 0 {
		scrubBytes = heal.NoScrub
	}
	// For tests that give each node on one machine a clock of its own; an
	// environment variable, so that no flag offers it.
	var clock func() time.Time
	if path := os.Getenv("DIFUSE_CLOCK_OFFSET_FILE"); path != "" {
		clock = skew.FromFile(path)
		log.Warn("this node's clock is offset by the duration in a file (for tests)", "file", path)
	}
	n, err := node.New(node.Config{
		GRPCAddr:     *grpcAddr,
		Advertise:    *advertise,
		HTTPAddr:     *httpAddr,
		OpenStatus:   *openStatus,
		Join:         *join,
		Token:        tok,
		JoinTimeout:  *joinTimeout,
		Leave:        *leave,
		LeaveTimeout: *leaveTimeout,
		Heal: heal.Config{
			Interval:       *healInterval,
			Grace:          *healGrace,
			BytesPerSecond: *healMiB << 20,
			ScrubBytes:     scrubBytes,
		},
		GC:      gc.Config{Interval: *gcInterval, Grace: *gcGrace, Rate: *gcRate},
		Compact: node.Compaction{Interval: *compactInterval, Retention: txlog.Retention{Keep: *logKeep, For: *logKeepFor}},
		Ring: ring.Config{
			VNodes:       *vnodes,
			Replicas:     *replicas,
			TickInterval: *tick,
			CallTimeout:  *callTimeout,
		},
		Store:  badgerdb.Options{Dir: *dir, MinFreeBytes: *minFree << 20},
		Logger: log,
		Clock:  clock,
		// Bugs planted for the fault-injection harness's tests that it
		// catches them; environment variables, so that no flag offers them.
		UnsafeLocalReads:     os.Getenv("DIFUSE_UNSAFE_LOCAL_READS") == "1",
		UnsafeForgetPromises: os.Getenv("DIFUSE_UNSAFE_FORGET_PROMISES") == "1",
	})
	if err != nil {
		log.Error("cannot start", "err", err)
		return node.ExitCode(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := n.Run(ctx); err != nil {
		log.Error("stopped with an error", "err", err)
		return node.ExitCode(err)
	}
	return 0
}
