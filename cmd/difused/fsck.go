package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/difuse/difuse/inode"
	"github.com/difuse/difuse/internal/cli"
	"github.com/difuse/difuse/level"
)

// cmdFsck walks the filesystem through a cluster and reports (and with
// -repair, fixes) what is wrong. It exits 0 when nothing is left wrong.
func cmdFsck(args []string, stdout, stderr io.Writer) int {
	fs, timeout, dir := longFlags("fsck", stderr)
	addrs := fs.String("b", defaultGRPC, "gRPC `addresses` (comma-separated) of nodes of the cluster")
	repair := fs.Bool("repair", false, "fix what can be fixed: remove entries naming missing inodes, correct link counts, delete page records and reclaim files no name reaches, copy blocks to the replicas that lack them")
	keepUnlinked := fs.Duration("keep-unlinked", 24*time.Hour, "keep a file with no links and no name from -repair this long after its last change (a mount may have it open)")
	noBlocks := fs.Bool("no-blocks", false, "skip counting the replicas of every block")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: difused fsck [flags]\n\nWalks the filesystem from the root: every entry names a live inode, every\nrecord's hash chain verifies, every file's link count matches its entries,\nevery block is on N replicas. Exits 0 if nothing is left wrong, 1 if\nsomething is.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cli.ExitUsage
	}
	ctx, cancel := withTimeout(*timeout)
	defer cancel()
	cl, err := dialCluster(ctx, *dir, strings.Split(*addrs, ","))
	if err != nil {
		fmt.Fprintf(stderr, "difused fsck: %v\n", err)
		return cli.ExitJoin
	}
	defer cl.Close()
	st, err := cl.Status(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "difused fsck: %v\n", err)
		return cli.ExitFailure
	}
	// Progress goes to stderr (a bar on a terminal), the report to stdout.
	walk := cli.NewProgress(stderr, "walking the tree:", "inodes")
	var blocks *cli.Progress // made when counting starts, for its rate
	walked := false
	finishWalk := func() {
		if !walked {
			walk.Finish()
			walked = true
		}
	}
	opts := inode.CheckOptions{Replicas: st.Replicas, Repair: *repair, KeepUnlinked: *keepUnlinked, Progress: func(p inode.CheckProgress) {
		if p.Phase == "walk" {
			walk.Update(p.Done, 0)
			return
		}
		finishWalk()
		if p.Total > 0 {
			if blocks == nil {
				blocks = cli.NewProgress(stderr, "counting block replicas:", "blocks")
			}
			blocks.Update(p.Done, p.Total)
		}
	}}
	if !*noBlocks {
		opts.Blocks = cl
	}
	// Quorum reads: what fsck acts on must not come from a deposed leader.
	ifs, err := inode.New(cl, cl, inode.Options{Levels: &inode.Levels{Read: level.Quorum, Write: level.Quorum, Blocks: level.Quorum, BlockWrite: level.Quorum}})
	if err != nil {
		fmt.Fprintf(stderr, "difused fsck: %v\n", err)
		return cli.ExitFailure
	}
	rep, err := ifs.Check(ctx, opts)
	finishWalk()
	if blocks != nil {
		blocks.Finish()
	}
	if err != nil {
		fmt.Fprintf(stderr, "difused fsck: %v\n", err)
		return cli.ExitFailure
	}
	fmt.Fprintf(stdout, "%d directories, %d files, %d symlinks; %d record chains verified; %d blocks\n",
		rep.Dirs, rep.Files, rep.Symlinks, rep.Records, rep.Blocks)
	left := 0
	for _, p := range rep.Problems {
		state := "found"
		switch {
		case p.Repaired:
			state = "repaired"
		case p.RepairError != "":
			state = "repair failed (" + p.RepairError + ")"
		}
		if !p.Repaired {
			left++
		}
		fmt.Fprintf(stdout, "%s: %s: %s\n", p.Path, p.What, state)
	}
	switch {
	case len(rep.Problems) == 0:
		fmt.Fprintln(stdout, "no problems found")
	case left == 0:
		fmt.Fprintf(stdout, "%d problems, all repaired\n", len(rep.Problems))
	default:
		fmt.Fprintf(stdout, "%d problems, %d not repaired", len(rep.Problems), left)
		if !*repair {
			fmt.Fprint(stdout, " (-repair fixes what can be fixed)")
		}
		fmt.Fprintln(stdout)
		return cli.ExitFailure
	}
	return 0
}
