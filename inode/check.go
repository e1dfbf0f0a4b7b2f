package inode

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"syscall"
	"time"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/txlog"
)

// BlockCounter counts the replicas that hold blocks: for each, the hosts
// of its replica set that hold it, and how many hosts the set has.
type BlockCounter interface {
	BlockCheck(ctx context.Context, hashes []blockstore.Hash) (held, of []int, err error)
}

// CheckOptions configure Check.
type CheckOptions struct {
	// Replicas is N, the copies every block should have.
	Replicas int
	// Blocks counts block replicas; nil skips the blocks' check.
	Blocks BlockCounter
	// Repair fixes what can be fixed: an entry naming a missing inode is
	// removed, a file's link count below the entries that name it is
	// raised to them, a page record no inode names is deleted, a file no
	// name reaches is reclaimed (see KeepUnlinked), a block some replicas
	// lack is copied to them. Every repair is a
	// conditional write, so one that races a user's change fails instead
	// of undoing it.
	Repair bool
	// Progress, if set, is told how far the check has got.
	Progress func(CheckProgress)
	// KeepUnlinked is how long a file with no links and no name is kept
	// from repair since it last changed: it is a file unlinked while a
	// mount had it open, which that mount reclaims at its last close, or
	// left behind by a mount that died. Default 24h. This compares the
	// mount's clock, which set the file's ctime, with the checker's.
	KeepUnlinked time.Duration
}

// CheckProgress is how far a check has got: in phase "walk" (the tree;
// Total unknown, 0) or "blocks" (Total known).
type CheckProgress struct {
	Phase       string
	Done, Total int64
}

// Problem is one thing Check found wrong.
type Problem struct {
	Path     string `json:"path"`
	What     string `json:"what"`
	Repaired bool   `json:"repaired"`
	// RepairError says why a repair failed.
	RepairError string `json:"repair_error,omitempty"`
}

// CheckReport is what Check found.
type CheckReport struct {
	Dirs, Files, Symlinks int64
	// Records counts the records whose hash chain was verified.
	Records int64
	// Blocks counts the distinct blocks files refer to.
	Blocks   int64
	Problems []Problem
}

// checkBatch is how many blocks one BlockCheck asks about.
const checkBatch = 1024

// Check walks the filesystem from the root: every entry must name a live
// inode of its type, every record's own hash chain (its history) must
// verify, every file's link count must equal the entries that name it, and
// every page record of the partitions it walks must be named by its
// inode, and every block a file refers to must be held by N replicas. It
// returns what
// it found (and repaired, with opts.Repair). Only an error that stops the
// walk (the root unreadable, the cluster gone) is an error.
func (f *FS) Check(ctx context.Context, opts CheckOptions) (CheckReport, error) {
	if opts.KeepUnlinked == 0 {
		opts.KeepUnlinked = 24 * time.Hour
	}
	c := &checker{f: f, opts: opts, links: map[ID]int{}, blocks: map[blockstore.Hash]string{}, attrs: map[ID]fileAttr{}, parts: map[uint64]bool{}, reached: map[ID]bool{Root: true}}
	if err := c.walk(ctx); err != nil {
		return c.report, err
	}
	c.checkLinks(ctx)
	if err := c.checkPages(ctx); err != nil {
		return c.report, err
	}
	if err := c.checkOrphans(ctx); err != nil {
		return c.report, err
	}
	if opts.Blocks != nil {
		if err := c.checkBlocks(ctx); err != nil {
			return c.report, err
		}
	}
	return c.report, nil
}

type checker struct {
	f      *FS
	opts   CheckOptions
	report CheckReport
	done   int64
	// partial is set when the walk skipped something it could not read, so
	// that entries may have gone uncounted.
	partial bool
	// links counts the entries naming each non-directory; attrs keeps
	// their link counts and where they were first seen.
	links map[ID]int
	attrs map[ID]fileAttr
	// blocks maps each block to the path of a file that refers to it.
	blocks map[blockstore.Hash]string
	// parts holds the partitions the walk met: of directories' entries,
	// and of inodes; reached, the inodes it reached through a name.
	parts   map[uint64]bool
	reached map[ID]bool
	// short is set once the check has reported too few hosts.
	short bool
}

type fileAttr struct {
	path  string
	nlink uint32
	hash  txlog.Hash // of the inode as the walk read it
	pages []PageRef
}

func (c *checker) problem(p, what string, repair func() error) {
	pr := Problem{Path: p, What: what}
	if repair != nil && c.opts.Repair {
		if err := repair(); err != nil {
			pr.RepairError = err.Error()
		} else {
			pr.Repaired = true
		}
	}
	c.report.Problems = append(c.report.Problems, pr)
}

func (c *checker) progress(phase string, total int64) {
	if c.opts.Progress != nil {
		c.opts.Progress(CheckProgress{Phase: phase, Done: c.done, Total: total})
	}
}

// verifyChain checks a record's hash chain, as History walks it.
func (c *checker) verifyChain(ctx context.Context, p string, part uint64, name string) error {
	_, err := c.f.log.Do(ctx, txlog.Request{Partition: PartitionName(part), Level: level.Quorum, Kind: txlog.KindHistory, Name: name})
	c.report.Records++
	if err != nil && !errors.Is(err, txlog.ErrNotFound) {
		if errors.Is(err, txlog.ErrUnavailable) || ctx.Err() != nil {
			return err
		}
		c.problem(p, fmt.Sprintf("record %s of %s: history does not verify: %v", name, PartitionName(part), err), nil)
	}
	return nil
}

// walk visits every directory breadth first.
func (c *checker) walk(ctx context.Context) error {
	type dir struct {
		path string
		id   ID
	}
	if _, _, err := c.f.GetAttr(ctx, Root); err != nil {
		return fmt.Errorf("check: the root directory: %w", err)
	}
	if err := c.verifyChain(ctx, "/", Root.Part, InodeRecord(Root.Num)); err != nil {
		return err
	}
	queue := []dir{{"/", Root}}
	c.report.Dirs++
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		part, err := c.f.children(ctx, d.id)
		if err != nil {
			c.problem(d.path, fmt.Sprintf("directory unreadable: %v", err), nil)
			c.partial = true
			continue
		}
		c.parts[part] = true
		type listed struct {
			DirEntry
			hash txlog.Hash // the entry's record as the walk read it
		}
		var entries []listed
		err = c.f.list(ctx, part, false, func(name string, e Entry, h txlog.Hash) {
			entries = append(entries, listed{DirEntry{Name: name, Entry: e}, h})
		}, nil)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.problem(d.path, fmt.Sprintf("directory cannot be listed: %v", err), nil)
			c.partial = true
			continue
		}
		for _, e := range entries {
			p := path.Join(d.path, e.Name)
			if err := c.verifyChain(ctx, p, part, EntryRecord(e.Name)); err != nil {
				return err
			}
			a, ah, err := c.f.GetAttr(ctx, e.ID)
			switch {
			case errors.Is(err, syscall.ENOENT):
				c.problem(p, fmt.Sprintf("entry names inode %s, which does not exist", e.ID), func() error {
					// Conditional on the entry as the walk read it: a
					// name made anew since is not this one.
					_, err := c.f.write(ctx, part, txlog.Change{Name: EntryRecord(e.Name), Delete: true, IfMatch: &e.hash})
					return err
				})
				continue
			case err != nil:
				if ctx.Err() != nil {
					return ctx.Err()
				}
				c.problem(p, fmt.Sprintf("inode %s unreadable: %v", e.ID, err), nil)
				c.partial = true
				continue
			case a.Type != e.Type:
				c.problem(p, fmt.Sprintf("entry says type %d, inode %s is type %d", e.Type, e.ID, a.Type), nil)
			}
			c.reached[e.ID] = true
			c.done++
			if c.done%256 == 0 {
				c.progress("walk", 0)
			}
			if a.Type == TypeDir {
				c.report.Dirs++
				if err := c.verifyChain(ctx, p, e.ID.Part, InodeRecord(e.ID.Num)); err != nil {
					return err
				}
				queue = append(queue, dir{p, e.ID})
				continue
			}
			c.links[e.ID]++
			if _, seen := c.attrs[e.ID]; seen {
				continue // a hard link: checked once
			}
			c.attrs[e.ID] = fileAttr{path: p, nlink: a.Nlink, hash: ah, pages: a.Pages}
			c.parts[e.ID.Part] = true
			if err := c.verifyChain(ctx, p, e.ID.Part, InodeRecord(e.ID.Num)); err != nil {
				return err
			}
			if a.Type == TypeSymlink {
				c.report.Symlinks++
				continue
			}
			c.report.Files++
			ext, err := c.f.Extents(ctx, e.ID, a, 0, a.Size)
			if err != nil {
				c.problem(p, fmt.Sprintf("pages of inode %s unreadable: %v", e.ID, err), nil)
				c.partial = true
				continue
			}
			for _, x := range ext {
				if _, ok := c.blocks[x.Block]; !ok {
					c.blocks[x.Block] = p
				}
			}
		}
	}
	c.progress("walk", 0)
	return nil
}

// checkLinks compares every file's link count with the entries that name
// it. A count below the entries is raised to them (an unlink would
// otherwise delete an inode that entries still name). A count above them
// is only reported: a link under way raises the count before it writes
// its entry, and lowering a count wrongly would lose the file; so is any
// count when the walk skipped something.
func (c *checker) checkLinks(ctx context.Context) {
	ids := slices.SortedFunc(maps.Keys(c.attrs), func(a, b ID) int {
		return cmp.Or(cmp.Compare(a.Part, b.Part), cmp.Compare(a.Num, b.Num))
	})
	for _, id := range ids {
		fa, n := c.attrs[id], c.links[id]
		if int(fa.nlink) == n {
			continue
		}
		what := fmt.Sprintf("link count %d, but %d entries name inode %s", fa.nlink, n, id)
		if int(fa.nlink) > n || c.partial {
			c.problem(fa.path, what+" (not lowered: a link may be under way, or the walk missed entries)", nil)
			continue
		}
		c.problem(fa.path, what, func() error {
			// Conditional on the inode as the walk read it: a link or
			// unlink since then makes the repair fail, not undo it.
			a, h, err := c.f.GetAttr(ctx, id)
			if err != nil {
				return err
			}
			if h != fa.hash {
				return fmt.Errorf("inode %s changed since the walk", id)
			}
			a.Nlink = uint32(n)
			_, err = c.f.write(ctx, id.Part, txlog.Change{Name: InodeRecord(id.Num), Value: EncodeAttr(a), IfMatch: &fa.hash})
			return err
		})
	}
}

// checkPages lists the page records of every partition the walk met and
// reports those no inode names: a removal or truncate interrupted before
// it deleted them all. A repair deletes one under the condition that its
// inode is still as the walk (or a read now) found it, so a page written
// since is never taken.
func (c *checker) checkPages(ctx context.Context) error {
	for _, part := range slices.Sorted(maps.Keys(c.parts)) {
		for after := ""; ; {
			resp, err := c.f.log.Do(ctx, txlog.Request{Partition: PartitionName(part), Level: level.Quorum, Kind: txlog.KindList, Name: PagePrefix, After: after})
			if err != nil {
				return fmt.Errorf("check: list the pages of %s: %w", PartitionName(part), err)
			}
			for _, r := range resp.Records {
				after = r.Name
				if err := c.checkPage(ctx, part, r.Name); err != nil {
					return err
				}
			}
			if !resp.More {
				break
			}
		}
	}
	return nil
}

// checkPage checks one page record of partition part.
func (c *checker) checkPage(ctx context.Context, part uint64, name string) error {
	num, idx, ver, ok := ParsePageRecord(name)
	if !ok {
		c.problem("/", fmt.Sprintf("record %s of %s is no page record", name, PartitionName(part)), nil)
		return nil
	}
	id := ID{Part: part, Num: num}
	fa, seen := c.attrs[id]
	pages, h := fa.pages, fa.hash
	if !seen {
		a, ah, err := c.f.GetAttr(ctx, id)
		switch {
		case errors.Is(err, syscall.ENOENT):
			h = txlog.Hash{} // no inode: the condition is that none appears
		case err != nil:
			return err
		default:
			pages, h = a.Pages, ah
		}
	}
	if slices.Contains(pages, PageRef{Index: idx, Ver: ver}) {
		return nil
	}
	p := fa.path
	if p == "" {
		p = "/"
	}
	c.problem(p, fmt.Sprintf("page record %s of %s: inode %s does not name it", name, PartitionName(part), id), func() error {
		_, err := c.f.write(ctx, part,
			txlog.Change{Name: InodeRecord(num), Check: true, IfMatch: &h},
			txlog.Change{Name: name, Delete: true})
		return err
	})
	return nil
}

// checkOrphans lists the inodes of every partition the walk met and
// reports those no name reached: a file unlinked while a mount had it
// open (no links), or one whose last name went with a crash before its
// inode (links left). With Repair, a second walk, begun after the
// listing, must not reach it either, and the inode is reclaimed under the
// condition that it is still as listed: a name moves only with a change
// of its inode (finishMove touches it), so an inode unchanged since the
// listing kept its names through the second walk, which would have met
// them. A directory no name reaches is only reported.
func (c *checker) checkOrphans(ctx context.Context) error {
	if c.partial {
		return nil // the walk skipped names
	}
	type orphan struct {
		id ID
		a  Attr
		h  txlog.Hash
	}
	var orphans []orphan
	for _, part := range slices.Sorted(maps.Keys(c.parts)) {
		for after := ""; ; {
			resp, err := c.f.log.Do(ctx, txlog.Request{Partition: PartitionName(part), Level: level.Quorum, Kind: txlog.KindList, Name: InodePrefix, After: after})
			if err != nil {
				return fmt.Errorf("check: list the inodes of %s: %w", PartitionName(part), err)
			}
			for _, r := range resp.Records {
				after = r.Name
				num, ok := inodeNum(r.Name)
				id := ID{Part: part, Num: num}
				if !ok || c.reached[id] {
					continue
				}
				a, err := DecodeAttr(r.Value)
				if err != nil {
					c.problem("/", fmt.Sprintf("inode %s does not decode: %v", id, err), nil)
					continue
				}
				orphans = append(orphans, orphan{id, a, r.Hash})
			}
			if !resp.More {
				break
			}
		}
	}
	if len(orphans) == 0 {
		return nil
	}
	var again map[ID]bool
	if c.opts.Repair {
		var err error
		if again, err = c.f.reachable(ctx); err != nil {
			return fmt.Errorf("check: walk again: %w", err)
		}
	}
	for _, o := range orphans {
		if again[o.id] {
			continue // named after all: made, or moved, during the walk
		}
		what := fmt.Sprintf("inode %s (type %d, %d links, %d bytes) is reached by no name", o.id, o.a.Type, o.a.Nlink, o.a.Size)
		var repair func() error
		switch {
		case o.a.Type == TypeDir:
		case o.a.Nlink == 0 && time.Since(time.Unix(0, o.a.Ctime)) < c.opts.KeepUnlinked:
			what += "; kept: it may be open on a mount"
		default:
			repair = func() error {
				u := deleteInode(o.id, o.a, txlog.Change{Name: InodeRecord(o.id.Num), Delete: true, IfMatch: &o.h})
				if _, err := c.f.write(ctx, o.id.Part, u.changes...); err != nil {
					return err
				}
				c.f.deleteGarbage(ctx, o.id.Part, u.garbage)
				return nil
			}
		}
		c.problem("/", what, repair)
	}
	return nil
}

// reachable walks the tree from the root and returns every inode a name
// reaches, settling the renames it meets under way.
func (f *FS) reachable(ctx context.Context) (map[ID]bool, error) {
	out := map[ID]bool{Root: true}
	queue := []ID{Root}
	for len(queue) > 0 {
		dir := queue[0]
		queue = queue[1:]
		part, err := f.children(ctx, dir)
		if err != nil {
			return nil, err
		}
		err = f.list(ctx, part, true, func(_ string, e Entry, _ txlog.Hash) {
			if !out[e.ID] && e.Type == TypeDir {
				queue = append(queue, e.ID)
			}
			out[e.ID] = true
		}, nil)
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// checkBlocks counts the replicas of every block files refer to.
func (c *checker) checkBlocks(ctx context.Context) error {
	hashes := make([]blockstore.Hash, 0, len(c.blocks))
	for h := range c.blocks {
		hashes = append(hashes, h)
	}
	slices.SortFunc(hashes, func(a, b blockstore.Hash) int { return slices.Compare(a[:], b[:]) })
	c.report.Blocks = int64(len(hashes))
	c.done = 0
	total := int64(len(hashes))
	c.progress("blocks", total)
	for start := 0; start < len(hashes); start += checkBatch {
		batch := hashes[start:min(start+checkBatch, len(hashes))]
		held, of, err := c.opts.Blocks.BlockCheck(ctx, batch)
		if err != nil {
			return fmt.Errorf("check: count block replicas: %w", err)
		}
		for i, h := range batch {
			want := of[i]
			if want < c.opts.Replicas && !c.short {
				c.short = true
				c.problem("/", fmt.Sprintf("the ring has %d hosts for %d replicas: every block is short of copies", want, c.opts.Replicas), nil)
			}
			switch {
			case held[i] == 0:
				c.problem(c.blocks[h], fmt.Sprintf("block %s is on none of its %d replicas", h, of[i]), nil)
			case held[i] < want:
				c.problem(c.blocks[h], fmt.Sprintf("block %s is on %d of %d replicas", h, held[i], want), func() error {
					// A read at level all copies the block to the
					// replicas that lack it.
					_, err := c.f.blocks.Get(ctx, h, level.All)
					return err
				})
			}
		}
		c.done += int64(len(batch))
		c.progress("blocks", total)
	}
	return nil
}
