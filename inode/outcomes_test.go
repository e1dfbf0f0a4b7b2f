package inode

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/difuse/difuse/txlog"
)

// hookedLog lets a test change what writes and reads do: hook, if set,
// sees each request first and may answer it instead (handled).
type hookedLog struct {
	Log
	mu   sync.Mutex
	hook func(req txlog.Request) (resp txlog.Response, err error, handled bool)
}

func (h *hookedLog) Do(ctx context.Context, req txlog.Request) (txlog.Response, error) {
	h.mu.Lock()
	hook := h.hook
	h.mu.Unlock()
	if hook != nil {
		if resp, err, handled := hook(req); handled {
			return resp, err
		}
	}
	return h.Log.Do(ctx, req)
}

func (h *hookedLog) set(hook func(req txlog.Request) (txlog.Response, error, bool)) {
	h.mu.Lock()
	h.hook = hook
	h.mu.Unlock()
}

// writes reports whether req writes the record name.
func writes(req txlog.Request, name string) bool {
	return req.Kind == txlog.KindWrite && slices.ContainsFunc(req.Write, func(c txlog.Change) bool { return c.Name == name && !c.Check })
}

// A rename onto an empty directory that definitely fails (it loses every
// race) leaves the directory as it was: listed, and taking entries.
func TestFailedRenameLeavesTheDirectoryAlive(t *testing.T) {
	base := newFS(t, 3)[0]
	hl := &hookedLog{Log: base.log}
	fs := mustFS(t, hl, base.blocks, Options{})
	ctx := ctxT(t)
	mkT(t, fs, Root, "src", TypeDir)
	dst := mkT(t, fs, Root, "dst", TypeDir)
	hl.set(func(req txlog.Request) (txlog.Response, error, bool) {
		if writes(req, EntryRecord("src")) && req.Partition == PartitionName(RootChildren) {
			return txlog.Response{}, fmt.Errorf("lost the race: %w", txlog.ErrConflict), true
		}
		return txlog.Response{}, nil, false
	})
	if err := fs.Rename(ctx, Root, "src", Root, "dst", 0); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("the rename that loses every race: %v, want EAGAIN", err)
	}
	hl.set(nil)
	if _, _, err := fs.Create(ctx, dst, "x", NewAttr{Type: TypeFile}); err != nil {
		t.Fatalf("touch dst/x after the failed rename: %v", err)
	}
}

// A hard link across directories whose entry write has an unknown outcome
// (the entry did commit, the answer was lost) keeps the link count it
// raised: removing the first name then leaves the inode to the second.
func TestLinkKeepsItsCountOnAnUnknownOutcome(t *testing.T) {
	base := newFS(t, 3)[0]
	hl := &hookedLog{Log: base.log}
	fs := mustFS(t, hl, base.blocks, Options{})
	ctx := ctxT(t)
	d := mkT(t, fs, Root, "d", TypeDir)
	f := mkT(t, fs, Root, "f", TypeFile)
	part, _ := fs.children(ctx, d)
	hl.set(func(req txlog.Request) (txlog.Response, error, bool) {
		if req.Partition == PartitionName(part) && writes(req, EntryRecord("f2")) {
			resp, err := base.log.Do(context.Background(), req) // it commits...
			if err != nil {
				return resp, err, true
			}
			return txlog.Response{}, fmt.Errorf("the answer was lost: %w", txlog.ErrUnavailable), true // ...but nobody hears
		}
		return txlog.Response{}, nil, false
	})
	if _, err := fs.Link(ctx, f, d, "f2"); err == nil {
		t.Fatal("the link with a lost answer succeeded")
	}
	hl.set(nil)
	if err := fs.Unlink(ctx, Root, "f"); err != nil {
		t.Fatal(err)
	}
	e, err := fs.Lookup(ctx, d, "f2")
	if err != nil {
		t.Fatal(err)
	}
	if a, _, err := fs.GetAttr(ctx, e.ID); err != nil || a.Nlink != 1 {
		t.Fatalf("d/f2's inode after the first name went: %+v, %v", a, err)
	}
}

// fsck's repair of an entry naming a missing inode deletes that entry as
// the walk saw it, never a name made anew meanwhile.
func TestCheckRepairSparesANewName(t *testing.T) {
	base := newFS(t, 3)[0]
	hl := &hookedLog{Log: base.log}
	fs := mustFS(t, hl, base.blocks, Options{})
	ctx := ctxT(t)
	gone := mkT(t, fs, Root, "name", TypeFile)
	if _, err := fs.write(ctx, gone.Part, txlog.Change{Name: InodeRecord(gone.Num), Delete: true}); err != nil {
		t.Fatal(err)
	}
	other := mustFS(t, base.log, base.blocks, Options{})
	var fresh ID
	hl.set(func(req txlog.Request) (txlog.Response, error, bool) {
		if req.Kind == txlog.KindRead && req.Name == InodeRecord(gone.Num) && fresh == (ID{}) {
			// While fsck reads the missing inode, a user replaces the
			// broken name with a new file.
			if _, err := other.write(ctx, RootChildren, txlog.Change{Name: EntryRecord("name"), Delete: true}); err != nil {
				t.Error(err)
			}
			id, _, err := other.Create(ctx, Root, "name", NewAttr{Type: TypeFile})
			if err != nil {
				t.Error(err)
			}
			fresh = id
		}
		return txlog.Response{}, nil, false
	})
	rep, err := fs.Check(ctx, CheckOptions{Replicas: 3, Repair: true})
	if err != nil || len(rep.Problems) != 1 || rep.Problems[0].Repaired {
		t.Fatalf("check: %+v, %v; want one problem, its repair refused", rep.Problems, err)
	}
	hl.set(nil)
	if e, err := fs.Lookup(ctx, Root, "name"); err != nil || e.ID != fresh {
		t.Fatalf("the new name after the repair: %v, %v", e.ID, err)
	}
}

// fsck reports the inodes no name reaches, and a repair reclaims them: a
// file whose last name went in a crash before its inode is deleted, one
// unlinked while open is kept while young (a mount may have it open).
func TestCheckOrphans(t *testing.T) {
	fs := newFS(t, 3)[0]
	ctx := ctxT(t)
	lost := mkT(t, fs, Root, "lost", TypeFile)
	w := fs.NewWriter(lost)
	w.WriteAt(random(3<<20, 1), 0)
	if _, err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// The crash: the entry went, the inode did not.
	if _, err := fs.write(ctx, RootChildren, txlog.Change{Name: EntryRecord("lost"), Delete: true}); err != nil {
		t.Fatal(err)
	}
	// A file unlinked while open: no links, kept for its handles.
	open := mkT(t, fs, Root, "open", TypeFile)
	fs.KeepOpen(func(id ID) bool { return id == open })
	if err := fs.Unlink(ctx, Root, "open"); err != nil {
		t.Fatal(err)
	}
	rep, err := fs.Check(ctx, CheckOptions{Replicas: 3, Repair: true})
	if err != nil || len(rep.Problems) != 2 {
		t.Fatalf("check: %+v, %v", rep.Problems, err)
	}
	for _, p := range rep.Problems {
		if strings.Contains(p.What, "kept") == p.Repaired {
			t.Errorf("problem %+v: want the lost file reclaimed and the open one kept", p)
		}
	}
	if _, _, err := fs.GetAttr(ctx, lost); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("the lost file after the repair: %v", err)
	}
	if _, _, err := fs.GetAttr(ctx, open); err != nil {
		t.Errorf("the open file after the repair: %v", err)
	}
	// Long unchanged, the unlinked file is reclaimed too.
	if rep, err = fs.Check(ctx, CheckOptions{Replicas: 3, Repair: true, KeepUnlinked: time.Nanosecond}); err != nil || len(rep.Problems) != 1 || !rep.Problems[0].Repaired {
		t.Fatalf("check with no time to keep: %+v, %v", rep.Problems, err)
	}
	if rep, err = fs.Check(ctx, CheckOptions{Replicas: 3}); err != nil || len(rep.Problems) != 0 {
		t.Fatalf("check after the repairs: %+v, %v", rep.Problems, err)
	}
}

// An adversary that moves a file between two directories while fsck walks
// (so that each walk misses it: listed in neither) never gets it
// reclaimed: a move changes the moved inode, and the repair is
// conditional on the inode as listed.
func TestCheckSparesAFileMovedDuringTheWalks(t *testing.T) {
	base := newFS(t, 3)[0]
	hl := &hookedLog{Log: base.log}
	fs := mustFS(t, hl, base.blocks, Options{})
	other := mustFS(t, base.log, base.blocks, Options{})
	ctx := ctxT(t)
	a := mkT(t, fs, Root, "a", TypeDir)
	z := mkT(t, fs, Root, "z", TypeDir)
	f := mkT(t, fs, z, "f", TypeFile)
	pa, _ := fs.children(ctx, a)
	pz, _ := fs.children(ctx, z)
	move := func(from ID, to ID) {
		if err := other.Rename(ctx, from, "f", to, "f", 0); err != nil {
			t.Error(err)
		}
	}
	listings := map[uint64]int{}
	hl.set(func(req txlog.Request) (txlog.Response, error, bool) {
		if req.Kind != txlog.KindList || req.Name != entryPrefix || (req.Partition != PartitionName(pa) && req.Partition != PartitionName(pz)) {
			return txlog.Response{}, nil, false
		}
		resp, err := base.log.Do(ctx, req)
		part := pa
		if req.Partition == PartitionName(pz) {
			part = pz
		}
		listings[part]++
		switch {
		case part == pa && listings[pa] == 1: // the first walk has passed a
			move(z, a)
		case part == pz && listings[pz] == 1: // ...and z: it missed f
			move(a, z)
		case part == pa && listings[pa] == 2: // the second walk has passed a
			move(z, a)
		}
		return resp, err, true
	})
	rep, err := fs.Check(ctx, CheckOptions{Replicas: 3, Repair: true})
	hl.set(nil)
	if err != nil {
		t.Fatal(err)
	}
	if listings[pa] < 2 {
		t.Fatalf("the walks listed a %d times: the adversary did not get its chance", listings[pa])
	}
	for _, p := range rep.Problems {
		if p.Repaired {
			t.Errorf("a repair went through: %+v", p)
		}
	}
	if _, _, err := fs.GetAttr(ctx, f); err != nil {
		t.Fatalf("the moved file's inode after fsck: %v", err)
	}
	if e, err := fs.Lookup(ctx, a, "f"); err != nil || e.ID != f {
		t.Fatalf("a/f after fsck: %v, %v", e.ID, err)
	}
}
