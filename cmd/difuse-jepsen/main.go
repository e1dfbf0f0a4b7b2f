// Command difuse-jepsen runs the Jepsen-style harness (package jepsen)
// against real difused processes in network namespaces, and prints one
// summary line. It exits 1 when it finds a violation or a lost write, or
// cannot decide. It needs root.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/difuse/difuse/internal/cli"
	"github.com/difuse/difuse/internal/jepsen"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("difuse-jepsen", flag.ContinueOnError)
	flags.SetOutput(stderr)
	var cfg jepsen.Config
	flags.StringVar(&cfg.Bin, "bin", "", "`directory` of the difused binary (default: this program's)")
	flags.StringVar(&cfg.Dir, "dir", "", "`directory` for the nodes' data and logs, and the results (default: a new one under /tmp)")
	flags.IntVar(&cfg.Nodes, "nodes", 5, "difused processes to run")
	flags.Uint64Var(&cfg.Seed, "seed", 0, "seed of the schedule and the workload (0: a random one, printed)")
	flags.DurationVar(&cfg.Duration, "duration", 30*time.Minute, "how long the workload and the nemesis run")
	flags.IntVar(&cfg.Clients, "clients", 10, "concurrent clients")
	flags.IntVar(&cfg.Keys, "keys", 5, "registers the clients share at a time")
	flags.IntVar(&cfg.Mounts, "mounts", 2, "difuse-mount clients running the filesystem workload (-1: none)")
	flags.IntVar(&cfg.FSClients, "fs-clients", 2, "filesystem workload clients per mount")
	flags.DurationVar(&cfg.KeyLife, "key-life", 30*time.Second, "how long the clients use the same registers before moving on to fresh ones")
	flags.DurationVar(&cfg.Hold, "hold", 6*time.Second, "how long a fault lasts (with jitter)")
	flags.DurationVar(&cfg.Quiet, "quiet", 4*time.Second, "time between faults (with jitter)")
	faults := flags.String("faults", "", "comma-separated `kinds` of fault: kill, power-loss, power-cut, pause, pause-leader, partition-majority, partition-bridge, isolate-leader, join, leave, replace, clock (default all)")
	cover := flags.String("cover", "", "comma-separated `kinds` of fault to do first, in this order, before choosing at random")
	flags.StringVar(&cfg.PlantedBug, "planted-bug", "", "plant a `bug` the run must catch: local-reads or forget-promises")
	logLevel := flags.String("log-level", "info", "log `level`")
	if err := flags.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return cli.ExitUsage
	}
	log, err := cli.NewLogger(stderr, *logLevel, false)
	if err != nil {
		fmt.Fprintln(stderr, "difuse-jepsen:", err)
		return cli.ExitUsage
	}
	cfg.Logger = log
	if *faults != "" {
		cfg.Faults = strings.Split(*faults, ",")
	}
	if *cover != "" {
		cfg.Cover = strings.Split(*cover, ",")
	}
	if cfg.Bin == "" {
		self, err := os.Executable()
		if err != nil {
			fmt.Fprintln(stderr, "difuse-jepsen:", err)
			return cli.ExitFailure
		}
		cfg.Bin = filepath.Dir(self)
	}
	if cfg.Dir == "" {
		if cfg.Dir, err = os.MkdirTemp("", "difuse-jepsen-"); err != nil {
			fmt.Fprintln(stderr, "difuse-jepsen:", err)
			return cli.ExitDataDir
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	sum, err := jepsen.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "difuse-jepsen: seed %d: %v\n", sum.Seed, err)
		return cli.ExitFailure
	}
	fmt.Fprintln(stdout, sum)
	if sum.Bad() {
		for _, l := range sum.Lost {
			fmt.Fprintln(stdout, "lost:", l)
		}
		for _, v := range sum.WeakViolations {
			fmt.Fprintln(stdout, "weak read:", v)
		}
		fmt.Fprintln(stdout, "evidence in", sum.Results)
		return cli.ExitFailure
	}
	return 0
}
