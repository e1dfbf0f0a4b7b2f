package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/difuse/difuse/internal/cli"
	"github.com/difuse/difuse/nodestatus"
)

// cmdGC has a node run a garbage collection cycle now and prints what it
// freed (or, with -dry-run, would free), following its progress.
func cmdGC(args []string, stdout, stderr io.Writer) int {
	fs, timeout, dir := longFlags("gc", stderr)
	addr := fs.String("b", defaultGRPC, "gRPC `address` of the node that runs the cycle")
	dryRun := fs.Bool("dry-run", false, "count what would be freed, free nothing")
	if err := fs.Parse(args); err != nil {
		return cli.ExitUsage
	}
	ctx, cancel := withTimeout(*timeout)
	defer cancel()
	c, err := dial(*dir, *addr)
	if err != nil {
		fmt.Fprintf(stderr, "difused gc: %v\n", err)
		return cli.ExitFailure
	}
	defer c.Close()
	type result struct {
		rep nodestatus.GCReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := c.Collect(ctx, *dryRun)
		done <- result{rep, err}
	}()
	// Follow the cycle's phases in the node's status.
	var progress *cli.Progress
	phase := ""
	for {
		select {
		case r := <-done:
			if progress != nil {
				progress.Finish()
			}
			if r.err != nil {
				fmt.Fprintf(stderr, "difused gc: %v\n", r.err)
				return cli.ExitFailure
			}
			printReport(stdout, r.rep)
			if len(r.rep.Failed) > 0 {
				return cli.ExitFailure
			}
			return 0
		case <-time.After(500 * time.Millisecond):
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := c.Status(sctx)
		cancel()
		if err != nil || st.GC.State == "idle" {
			continue
		}
		if st.GC.State != phase {
			if progress != nil {
				progress.Finish()
			}
			unit := map[string]string{"marking": "partitions", "sweeping": "nodes"}[st.GC.State]
			progress, phase = cli.NewProgress(stderr, st.GC.State+":", unit), st.GC.State
		}
		progress.Update(st.GC.Done, st.GC.Total)
	}
}

func printReport(w io.Writer, r nodestatus.GCReport) {
	verb := "freed"
	if r.DryRun {
		verb = "would free"
	}
	fmt.Fprintf(w, "marked %d blocks referenced by %d inodes in %d partitions\n", r.Referenced, r.Inodes, r.Partitions)
	fmt.Fprintf(w, "%d nodes examined %d block copies and %s %d (%s) in %s\n", r.Hosts, r.Examined, verb, r.Freed, mib(r.FreedBytes),
		r.End.Sub(r.Start).Round(time.Millisecond))
	if r.Recent > 0 {
		fmt.Fprintf(w, "%d unreferenced block copies (%s) were kept: used within the grace time (-gc-grace)\n", r.Recent, mib(r.RecentBytes))
	}
	for _, f := range r.Failed {
		fmt.Fprintf(w, "failed: %s\n", f)
	}
}
