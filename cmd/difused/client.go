package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/client"
	"github.com/difuse/difuse/identity"
	"github.com/difuse/difuse/internal/cli"
	"github.com/difuse/difuse/nodestatus"
	"github.com/difuse/difuse/ring"
)

// clientFlags parses the flags shared by the client subcommands.
func clientFlags(name string, stderr io.Writer) (*flag.FlagSet, *time.Duration, *string) {
	fs := flag.NewFlagSet("difused "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this `duration`")
	return fs, timeout, memberDir(fs)
}

// longFlags parses the flags shared by the subcommands of long work, whose
// timeout defaults to none.
func longFlags(name string, stderr io.Writer) (*flag.FlagSet, *time.Duration, *string) {
	fs := flag.NewFlagSet("difused "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 0, "give up after this `duration` (0: never)")
	return fs, timeout, memberDir(fs)
}

// memberDir adds the -d flag of a subcommand: the data directory of the
// node on this machine whose certificate the command shows the cluster.
func memberDir(fs *flag.FlagSet) *string {
	return fs.String("d", "", "data `directory` of the node on this machine whose certificate to use (default: the default one of the node at -b's port)")
}

// memberIdentity returns the identity of the node whose data directory is
// dir, or if dir is empty, of the node whose default data directory
// follows from the port of addr.
func memberIdentity(dir, addr string) (*identity.Identity, error) {
	if dir == "" {
		var err error
		if dir, err = cli.DataDir(addr[strings.LastIndex(addr, ":")+1:]); err != nil {
			return nil, err
		}
	}
	id, err := identity.Load(dir)
	if errors.Is(err, identity.ErrNone) {
		return nil, fmt.Errorf("no node's certificate in %s: run the command on a node's machine, or give that node's data directory with -d", dir)
	}
	return id, err
}

// memberCreds returns the credentials of the node memberIdentity finds.
func memberCreds(dir, addr string) (credentials.TransportCredentials, error) {
	id, err := memberIdentity(dir, addr)
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(id.ClientConfig()), nil
}

// dial prepares a connection to the node at addr with the credentials of
// the node whose data directory is dir (see memberCreds).
func dial(dir, addr string) (*client.Conn, error) {
	creds, err := memberCreds(dir, addr)
	if err != nil {
		return nil, err
	}
	return client.Dial(addr, creds)
}

// dialCluster is dial for a cluster reached through addrs.
func dialCluster(ctx context.Context, dir string, addrs []string) (*client.Cluster, error) {
	creds, err := memberCreds(dir, addrs[0])
	if err != nil {
		return nil, err
	}
	return client.DialCluster(ctx, addrs, creds)
}

// withTimeout returns a context that ends after d, or never if d is 0.
func withTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	if d > 0 {
		return context.WithTimeout(context.Background(), d)
	}
	return context.WithCancel(context.Background())
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs, timeout, dir := clientFlags("status", stderr)
	addr := fs.String("b", defaultGRPC, "gRPC `address` of a node of the cluster")
	verbose := fs.Bool("v", false, "list the node's vnodes with their successors and fingers")
	if err := fs.Parse(args); err != nil {
		return cli.ExitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c, err := dialCluster(ctx, *dir, []string{*addr})
	if err != nil {
		fmt.Fprintf(stderr, "difused status: %v\n", err)
		return cli.ExitFailure
	}
	defer c.Close()
	hosts := uniqueHosts(c.Statuses(ctx), *addr)
	printCluster(stdout, hosts)
	if h := hosts[0]; h.Err == nil { // the node asked comes first
		fmt.Fprintf(stdout, "\nthe node asked, %s:\n", h.Addr)
		printStatus(stdout, h.Status, *verbose)
	}
	return 0
}

// uniqueHosts puts the node at asked first and drops a node answering
// under a second address; nodes that do not answer stay.
func uniqueHosts(hosts []client.HostStatus, asked string) []client.HostStatus {
	first := func(h client.HostStatus) int {
		if h.Addr == asked {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(hosts, func(a, b client.HostStatus) int { return cmp.Compare(first(a), first(b)) })
	seen := map[string]bool{}
	return slices.DeleteFunc(hosts, func(h client.HostStatus) bool {
		if h.Err != nil {
			return false
		}
		dup := seen[h.Status.Node.ID]
		seen[h.Status.Node.ID] = true
		return dup
	})
}

// printCluster prints a person's summary of the cluster from its nodes'
// statuses: how many answer, missing copies, space and deduplication,
// garbage collection, a line per node and the latest warnings.
func printCluster(w io.Writer, hosts []client.HostStatus) {
	var up []nodestatus.Status
	waiting := map[string]bool{}
	for _, h := range hosts {
		if h.Err == nil {
			up = append(up, h.Status)
			for _, a := range h.Status.Heal.Waiting {
				waiting[a] = true
			}
		}
	}
	for _, h := range hosts {
		delete(waiting, h.Addr)
	}
	vnodes, replicas := 0, 0
	var missingParts, missingBlocks, copies, stored, written, added, freed, freedBytes int64
	var recent []hostEntry
	for _, st := range up {
		vnodes += len(st.VNodes)
		replicas = max(replicas, st.Replicas)
		missingParts += st.Heal.MissingPartitions
		missingBlocks += st.Heal.MissingBlocks
		copies += st.Blocks.Blocks
		stored += st.Blocks.StoredBytes
		written += st.Blocks.WrittenBytes
		added += st.Blocks.NewBytes
		freed += st.GC.FreedBlocks
		freedBytes += st.GC.FreedBytes
		for _, e := range st.Recent {
			recent = append(recent, hostEntry{st.Node.GRPCAddr, e})
		}
	}
	fmt.Fprintf(w, "cluster     %d nodes, %d up", len(hosts)+len(waiting), len(up))
	if len(waiting) > 0 {
		fmt.Fprintf(w, " (healing waits for %s)", strings.Join(slices.Sorted(maps.Keys(waiting)), ", "))
	}
	fmt.Fprintf(w, "; %d vnodes; %d copies of every key\n", vnodes, replicas)
	if missingParts+missingBlocks == 0 {
		fmt.Fprintln(w, "copies      none missing (as the last healing pass of each node found)")
	} else {
		fmt.Fprintf(w, "copies      %d partition and %d block copies missing or behind (the last healing passes)\n", missingParts, missingBlocks)
	}
	used, free := nodestatus.Capacity(up)
	fmt.Fprintf(w, "space       files take %s, %s left (each counted once, not per copy)\n", mib(int64(used)), mib(int64(free)))
	dedup := "-"
	if st := blockstore.NewStats(copies, stored, written, added); st.DedupRatio > 0 {
		dedup = fmt.Sprintf("%.2f", st.DedupRatio)
	}
	fmt.Fprintf(w, "blocks      %d copies, %s; since the nodes started %s written, %s new (dedup ratio %s)\n", copies, mib(stored), mib(written), mib(added), dedup)
	fmt.Fprintf(w, "gc          %d blocks (%s) freed since the nodes started\n", freed, mib(freedBytes))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nnode\tstate\tup\tmemory\tstore\tfree\tblocks\tpartitions\thealing")
	for _, h := range hosts {
		if h.Err != nil {
			fmt.Fprintf(tw, "%s\tdown\t\t\t\t\t\t\t%v\n", h.Addr, h.Err)
			continue
		}
		st := h.Status
		fmt.Fprintf(tw, "%s\tup\t%s\t%s\t%s\t%s\t%d (%s)\t%d\t%s\n", h.Addr, time.Since(st.Started).Round(time.Second),
			mib(st.RSSBytes), mib(st.Store.LSMBytes+st.Store.VlogBytes), mib(st.Store.FreeBytes),
			st.Blocks.Blocks, mib(st.Blocks.StoredBytes), st.Heal.Partitions, st.Heal.State)
	}
	for _, a := range slices.Sorted(maps.Keys(waiting)) {
		fmt.Fprintf(tw, "%s\tdown\t\t\t\t\t\t\thealing waits for it\n", a)
	}
	tw.Flush()
	if len(recent) > 0 {
		slices.SortStableFunc(recent, func(a, b hostEntry) int { return a.Time.Compare(b.Time) })
		recent = recent[max(0, len(recent)-5):]
		fmt.Fprintln(w, "\nthe latest warnings and errors:")
		for _, e := range recent {
			fmt.Fprintf(w, "  %s %s %-5s %s\n", e.Time.Format(time.DateTime), e.host, e.Level, e.Message)
		}
	}
}

// hostEntry is a node's log entry with the node's address.
type hostEntry struct {
	host string
	nodestatus.LogEntry
}

// printStatus prints one node's view of itself; verbose adds its vnodes'
// successors and fingers.
func printStatus(w io.Writer, st nodestatus.Status, verbose bool) {
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
		succ := "none"
		if len(v.Succs) > 0 {
			succ = v.Succs[0].String()
		}
		fmt.Fprintf(w, "  vnode %s  pred %s  succ %s\n", v.Self.ID.Short(), v.Pred, succ)
		if !verbose {
			continue
		}
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
	fs, timeout, dir := clientFlags("ping", stderr)
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
	c, err := dial(*dir, addr)
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
	fs, timeout, dir := clientFlags("leave", stderr)
	addr := fs.String("b", defaultGRPC, "gRPC `address` of the node that leaves")
	if err := fs.Parse(args); err != nil {
		return cli.ExitUsage
	}
	c, err := dial(*dir, *addr)
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

func printHeal(w io.Writer, h nodestatus.Heal) {
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
