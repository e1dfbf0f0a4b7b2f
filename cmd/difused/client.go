package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/difuse/difuse/client"
	"github.com/difuse/difuse/heal"
	"github.com/difuse/difuse/internal/cli"
	"github.com/difuse/difuse/ring"
)

// clientFlags parses the flags shared by the client subcommands.
func clientFlags(name string, stderr io.Writer) (*flag.FlagSet, *time.Duration) {
	fs := flag.NewFlagSet("difused "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this `duration`")
	return fs, timeout
}

// longFlags parses the flags shared by the subcommands of long work, whose
// timeout defaults to none.
func longFlags(name string, stderr io.Writer) (*flag.FlagSet, *time.Duration) {
	fs := flag.NewFlagSet("difused "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 0, "give up after this `duration` (0: never)")
	return fs, timeout
}

// withTimeout returns a context that ends after d, or never if d is 0.
func withTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	if d > 0 {
		return context.WithTimeout(context.Background(), d)
	}
	return context.WithCancel(context.Background())
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs, timeout := clientFlags("status", stderr)
	addr := fs.String("b", defaultGRPC, "gRPC `address` of the node to ask")
	if err := fs.Parse(args); err != nil {
		return cli.ExitUsage
	}
	c, err := client.Dial(*addr)
	if err != nil {
		fmt.Fprintf(stderr, "difused status: %v\n", err)
		return cli.ExitFailure
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "difused status: %v\n", err)
		return cli.ExitFailure
	}
	printStatus(stdout, st)
	return 0
}

func printStatus(w io.Writer, st client.Status) {
	fmt.Fprintf(w, "node        %s (version %s)\n", st.Node.ID, st.Node.Version)
	fmt.Fprintf(w, "gRPC        %s\n", st.Node.GRPCAddr)
	fmt.Fprintf(w, "HTTP        http://%s/\n", st.Node.HTTPAddr)
	fmt.Fprintf(w, "up          %s (since %s)\n", time.Since(st.Started).Round(time.Second), st.Started.Format(time.RFC3339))
	if st.JoinedVia != "" {
		fmt.Fprintf(w, "joined via  %s\n", st.JoinedVia)
	}
	fmt.Fprintf(w, "data        %s\n", st.DataDir)
	fmt.Fprintf(w, "store       %s LSM, %s value log, %s free\n", mib(st.Store.LSMBytes), mib(st.Store.VlogBytes), mib(st.Store.FreeBytes))
	fmt.Fprintf(w, "blocks      %d held, %s; since start %s written, %s new (dedup ratio %.2f)\n",
		st.Blocks.Blocks, mib(st.Blocks.StoredBytes), mib(st.Blocks.WrittenBytes), mib(st.Blocks.NewBytes), st.Blocks.DedupRatio)
	fmt.Fprintf(w, "memory      %s resident, %d goroutines\n", mib(st.RSSBytes), st.Goroutines)
	printHeal(w, st.Heal)
	g := st.GC
	fmt.Fprintf(w, "gc          %s; this node's sweeps freed %d blocks (%s); %d cycles run here", g.State, g.FreedBlocks, mib(g.FreedBytes), g.Cycles)
	if g.Last != nil {
		fmt.Fprintf(w, ", the last at %s freed %d (%s)", g.Last.End.Format(time.DateTime), g.Last.Freed, mib(g.Last.FreedBytes))
	}
	fmt.Fprintln(w)
	if g.Errors > 0 {
		fmt.Fprintf(w, "            %d errors, last: %s\n", g.Errors, g.LastError)
	}
	if len(st.Recent) > 0 {
		fmt.Fprintf(w, "recent      %d warnings and errors, the latest:\n", len(st.Recent))
		for _, e := range st.Recent[max(0, len(st.Recent)-5):] {
			fmt.Fprintf(w, "  %s %-5s %s\n", e.Time.Format(time.DateTime), e.Level, e.Message)
		}
	}
	if len(st.VNodes) == 0 {
		fmt.Fprintln(w, "ring        not a member yet")
		return
	}
	fmt.Fprintf(w, "ring        %d vnodes (ids shortened to 8 hex digits)\n", len(st.VNodes))
	for _, v := range st.VNodes {
		fmt.Fprintf(w, "  vnode %s  pred %s\n", v.Self.ID.Short(), v.Pred)
		fmt.Fprintf(w, "    successors %s\n", refList(v.Succs))
		fingers := make([]ring.Ref, len(v.Fingers))
		for i, f := range v.Fingers {
			fingers[i] = f.Ref
		}
		fmt.Fprintf(w, "    fingers    %s\n", refList(fingers))
	}
}

func refList(refs []ring.Ref) string {
	if len(refs) == 0 {
		return "none"
	}
	s := make([]string, len(refs))
	for i, r := range refs {
		s[i] = r.String()
	}
	return strings.Join(s, " ")
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func cmdPing(args []string, stdout, stderr io.Writer) int {
	fs, timeout := clientFlags("ping", stderr)
	count := fs.Int("n", 5, "number of pings")
	size := fs.Int("size", 0, "payload `bytes` per ping")
	if err := fs.Parse(args); err != nil {
		return cli.ExitUsage
	}
	addr := defaultGRPC
	switch fs.NArg() {
	case 0:
	case 1:
		addr = fs.Arg(0)
	default:
		fmt.Fprintln(stderr, "difused ping: want at most one address")
		return cli.ExitUsage
	}
	if *count < 1 || *size < 0 || *size > 3<<20 {
		fmt.Fprintln(stderr, "difused ping: -n must be at least 1 and -size between 0 and 3 MiB")
		return cli.ExitUsage
	}
	c, err := client.Dial(addr)
	if err != nil {
		fmt.Fprintf(stderr, "difused ping: %v\n", err)
		return cli.ExitFailure
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	info, err := c.Ping(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "difused ping: %v\n", err)
		return cli.ExitFailure
	}
	fmt.Fprintf(stdout, "PING %s (node %s), %d bytes\n", addr, info.ID, *size)
	var rtts []time.Duration
	err = c.PingStream(ctx, *count, *size, func(seq int, rtt time.Duration) {
		rtts = append(rtts, rtt)
		fmt.Fprintf(stdout, "seq=%d time=%s\n", seq, rtt.Round(time.Microsecond))
	})
	if err != nil {
		fmt.Fprintf(stderr, "difused ping: %v\n", err)
		return cli.ExitFailure
	}
	slices.Sort(rtts)
	var sum time.Duration
	for _, r := range rtts {
		sum += r
	}
	fmt.Fprintf(stdout, "%d pings: min %s, median %s, mean %s, max %s\n", len(rtts),
		rtts[0].Round(time.Microsecond), rtts[len(rtts)/2].Round(time.Microsecond),
		(sum / time.Duration(len(rtts))).Round(time.Microsecond), rtts[len(rtts)-1].Round(time.Microsecond))
	return 0
}

func cmdLeave(args []string, stdout, stderr io.Writer) int {
	fs, timeout := clientFlags("leave", stderr)
	addr := fs.String("b", defaultGRPC, "gRPC `address` of the node that leaves")
	if err := fs.Parse(args); err != nil {
		return cli.ExitUsage
	}
	c, err := client.Dial(*addr)
	if err != nil {
		fmt.Fprintf(stderr, "difused leave: %v\n", err)
		return cli.ExitFailure
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	err = c.Leave(ctx)
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "difused leave: %v\n", err)
		return cli.ExitFailure
	}
	fmt.Fprintf(stdout, "%s is leaving: it hands off what it holds, then stops\n", *addr)
	// Follow the hand-off until the node stops answering: its progress is
	// the share of what it held at the first look that it no longer holds.
	progress := cli.NewProgress(stdout, "handing off:", "partitions and blocks")
	var total int64
	for ; ; time.Sleep(time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		st, err := c.Status(ctx)
		cancel()
		if err != nil {
			progress.Finish()
			fmt.Fprintf(stdout, "%s has left\n", *addr)
			return 0
		}
		held := st.Heal.Partitions + st.Heal.Blocks
		total = max(total, held)
		progress.Update(total-held, total)
	}
}

func printHeal(w io.Writer, h heal.Stats) {
	state := h.State
	switch {
	case state == "waiting":
		state += " (grace time of " + strings.Join(h.Waiting, ", ") + ")"
	case state != "idle":
		state += fmt.Sprintf(" (%.0f%% of the pass)", 100*h.Progress)
	case h.Settled:
		state += ", settled"
	}
	fmt.Fprintf(w, "healing     %s; %d passes; holds %d partitions, %d blocks\n", state, h.Passes, h.Partitions, h.Blocks)
	fmt.Fprintf(w, "            last pass found %d partition and %d block copies missing or behind\n", h.MissingPartitions, h.MissingBlocks)
	fmt.Fprintf(w, "            %d partitions synced, %d dropped; %d blocks sent (%s), %d dropped; %d blocks scrubbed, %d damaged\n",
		h.PartitionsSynced, h.PartitionsDropped, h.BlocksSent, mib(h.BytesSent), h.BlocksDropped, h.BlocksScrubbed, h.BlocksCorrupt)
	if h.Errors > 0 {
		fmt.Fprintf(w, "            %d errors, last: %s\n", h.Errors, h.LastError)
	}
}
