package inode

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/txlog"
)

// names lists directory dir's names.
func names(t *testing.T, fs *FS, dir ID) []string {
	t.Helper()
	list, err := fs.Readdir(ctxT(t), dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list {
		out = append(out, e.Name)
	}
	return out
}

func mkT(t *testing.T, fs *FS, dir ID, name string, typ Type) ID {
	t.Helper()
	id, _, err := fs.Create(ctxT(t), dir, name, NewAttr{Type: typ, Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestRenameAcrossDirectories(t *testing.T) {
	fss := newFS(t, 3)
	fs := fss[0]
	ctx := ctxT(t)
	a, b := mkT(t, fs, Root, "a", TypeDir), mkT(t, fs, Root, "b", TypeDir)
	f := mkT(t, fs, a, "f", TypeFile)
	if err := fss[1].Rename(ctx, a, "f", b, "g", 0); err != nil {
		t.Fatal(err)
	}
	if got := names(t, fs, a); len(got) != 0 {
		t.Errorf("a after the move: %q", got)
	}
	if e, err := fs.Lookup(ctx, b, "g"); err != nil || e.ID != f {
		t.Fatalf("b/g = %+v, %v", e, err)
	}
	// The inode stays in a's partition; a can still go.
	if err := fs.Rmdir(ctx, Root, "a"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := fs.GetAttr(ctx, f); err != nil {
		t.Fatalf("the moved file's inode: %v", err)
	}
	// Replacing a file across directories drops its inode, wherever it lives.
	c := mkT(t, fs, Root, "c", TypeDir)
	h := mkT(t, fs, c, "h", TypeFile)
	if err := fs.Rename(ctx, c, "h", b, "g", 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := fs.GetAttr(ctx, f); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("the replaced file's inode survived: %v", err)
	}
	if e, _ := fs.Lookup(ctx, b, "g"); e.ID != h {
		t.Errorf("b/g names %s, want %s", e.ID, h)
	}
	// Unlinking a name whose inode lives elsewhere removes the inode too.
	if err := fs.Unlink(ctx, b, "g"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := fs.GetAttr(ctx, h); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("the unlinked file's inode survived: %v", err)
	}
	// A directory moves with its contents, and can be removed where it went.
	d := mkT(t, fs, c, "d", TypeDir)
	mkT(t, fs, d, "inner", TypeFile)
	if err := fs.Rename(ctx, c, "d", b, "d", 0); err != nil {
		t.Fatal(err)
	}
	if got := names(t, fs, d); len(got) != 1 || got[0] != "inner" {
		t.Errorf("the moved directory holds %q", got)
	}
	if err := fs.Rmdir(ctx, b, "d"); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Errorf("rmdir of the moved, non-empty directory: %v", err)
	}
	if err := fs.Unlink(ctx, d, "inner"); err != nil {
		t.Fatal(err)
	}
	if err := fs.Rmdir(ctx, b, "d"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := fs.GetAttr(ctx, d); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("the removed directory's inode survived: %v", err)
	}
	// Into a directory removed meanwhile: nothing moves.
	mkT(t, fs, c, "x", TypeFile)
	if err := fs.Rmdir(ctx, Root, "a"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("a is gone already: %v", err)
	}
	if err := fs.Rename(ctx, c, "x", a, "x", 0); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("rename into a removed directory: %v, want ENOENT", err)
	}
	if got := names(t, fs, c); len(got) != 1 || got[0] != "x" {
		t.Errorf("c after the failed move: %q", got)
	}
}

// Two clients race to move one file into different directories: one wins,
// the other finds no source, and the file has exactly one name.
func TestConcurrentMoves(t *testing.T) {
	fss := newFS(t, 3)
	ctx := ctxT(t)
	src := mkT(t, fss[0], Root, "src", TypeDir)
	var dirs []ID
	for i := range 3 {
		dirs = append(dirs, mkT(t, fss[0], Root, fmt.Sprintf("d%d", i), TypeDir))
	}
	for round := range 6 {
		name := fmt.Sprintf("f%d", round)
		mkT(t, fss[0], src, name, TypeFile)
		errs := make([]error, 3)
		var wg sync.WaitGroup
		for i := range 3 {
			wg.Go(func() { errs[i] = fss[i].Rename(ctx, src, name, dirs[i], name, 0) })
		}
		wg.Wait()
		won := 0
		for i, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.EAGAIN):
				t.Errorf("round %d, mover %d: %v", round, i, err)
			}
		}
		found := 0
		for _, d := range append([]ID{src}, dirs...) {
			if _, err := fss[0].Lookup(ctx, d, name); err == nil {
				found++
			}
		}
		if won > 1 || found != 1 {
			t.Fatalf("round %d: %d moves won, %d names: %v", round, won, found, errs)
		}
	}
}

// Every point at which a rename's client can die leaves exactly one name.
func TestMoveCrashPoints(t *testing.T) {
	fss := newFS(t, 3)
	fs, other := fss[0], fss[1]
	ctx := ctxT(t)
	a, b := mkT(t, fs, Root, "a", TypeDir), mkT(t, fs, Root, "b", TypeDir)
	pa, _ := fs.children(ctx, a)
	pb, _ := fs.children(ctx, b)
	var zero txlog.Hash
	// mark does step 1 of a move of a/name to b/name and returns it.
	mark := func(name string, since time.Time) (Move, Entry) {
		t.Helper()
		e, h, err := fs.entry(ctx, pa, name)
		if err != nil {
			t.Fatal(err)
		}
		m := Move{Txid: randomID(), Dest: pb, Since: since.UnixNano()}
		marked := e
		marked.Move = &m
		if _, err := fs.write(ctx, pa, change(EntryRecord(name), EncodeEntry(marked), &h)); err != nil {
			t.Fatal(err)
		}
		return m, e
	}
	commit := func(name string, m Move, e Entry) error {
		_, err := fs.write(ctx, pb,
			change(moveRecord(m.Txid), []byte{moveCommitted}, &zero),
			change(EntryRecord(name), EncodeEntry(e), &zero))
		return err
	}
	where := func(name string) (inA, inB bool) {
		_, errA := other.Lookup(ctx, a, name)
		_, errB := other.Lookup(ctx, b, name)
		return errA == nil, errB == nil
	}

	// Died after marking: the old name is all there is.
	mkT(t, fs, a, "one", TypeFile)
	m1, e1 := mark("one", time.Now())
	if inA, inB := where("one"); !inA || inB {
		t.Errorf("marked only: in a %v, in b %v", inA, inB)
	}
	if got := names(t, other, a); len(got) != 1 {
		t.Errorf("a lists %q", got)
	}
	// Died after committing: the new name is all there is, and removing
	// the old directory cleans up the leftover mark.
	mkT(t, fs, a, "two", TypeFile)
	m2, e2 := mark("two", time.Now())
	if err := commit("two", m2, e2); err != nil {
		t.Fatal(err)
	}
	if inA, inB := where("two"); inA || !inB {
		t.Errorf("committed: in a %v, in b %v", inA, inB)
	}
	if got := names(t, other, a); len(got) != 1 || got[0] != "one" {
		t.Errorf("a lists %q, want only one", got)
	}
	// Changing a marked entry settles its move first: "one" was never
	// committed, so an unlink aborts the move and removes the file, and
	// the dead renamer's late commit fails.
	if err := other.Unlink(ctx, a, "one"); err != nil {
		t.Fatal(err)
	}
	if err := commit("one", m1, e1); !errors.Is(err, errRaced) {
		t.Errorf("a commit after the abort: %v", err)
	}
	if inA, inB := where("one"); inA || inB {
		t.Errorf("after unlink: in a %v, in b %v", inA, inB)
	}
	if err := other.Rmdir(ctx, Root, "a"); err != nil {
		t.Fatalf("rmdir over a committed move's leftover: %v", err)
	}
	// A move left undecided for long is aborted by the next reader.
	c := mkT(t, fs, Root, "a", TypeDir)
	a = c
	pa, _ = fs.children(ctx, a)
	mkT(t, fs, a, "old", TypeFile)
	m3, e3 := mark("old", time.Now().Add(-2*staleMove))
	if inA, inB := where("old"); !inA || inB {
		t.Errorf("stale: in a %v, in b %v", inA, inB)
	}
	if e, _, err := fs.entry(ctx, pa, "old"); err != nil || e.Move != nil {
		t.Errorf("the stale mark is still there: %+v, %v", e, err)
	}
	if err := commit("old", m3, e3); !errors.Is(err, errRaced) {
		t.Errorf("a commit after the stale abort: %v", err)
	}
	// A committed move leaves no decision record behind; an aborted one
	// keeps it, against late commits.
	for m, want := range map[Move]byte{m1: moveAborted, m2: 0, m3: moveAborted} {
		if d, err := fs.decision(ctx, m); err != nil || d != want {
			t.Errorf("decision record of %x: %d, %v; want %d", m.Txid, d, err, want)
		}
	}
}

func TestLink(t *testing.T) {
	fss := newFS(t, 3)
	fs := fss[0]
	ctx := ctxT(t)
	d := mkT(t, fs, Root, "d", TypeDir)
	f := mkT(t, fs, Root, "f", TypeFile)
	if a, err := fss[1].Link(ctx, f, Root, "f2"); err != nil || a.Nlink != 2 {
		t.Fatalf("link in the same directory: %+v, %v", a, err)
	}
	if a, err := fss[2].Link(ctx, f, d, "f3"); err != nil || a.Nlink != 3 {
		t.Fatalf("link in another directory: %+v, %v", a, err)
	}
	if _, err := fs.Link(ctx, f, d, "f3"); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("link onto an existing name: %v, want EEXIST", err)
	}
	if _, err := fs.Link(ctx, d, Root, "d2"); !errors.Is(err, syscall.EPERM) {
		t.Errorf("link to a directory: %v, want EPERM", err)
	}
	if a, _, _ := fs.GetAttr(ctx, f); a.Nlink != 3 {
		t.Errorf("nlink after failed links: %d", a.Nlink)
	}
	// Renaming one link onto another of the same inode leaves both.
	if err := fs.Rename(ctx, Root, "f", d, "f3", 0); err != nil {
		t.Fatal(err)
	}
	if got := names(t, fs, Root); len(got) != 3 {
		t.Errorf("root after a rename between links: %q", got)
	}
	for i, name := range []string{"f", "f2"} {
		if err := fs.Unlink(ctx, Root, name); err != nil {
			t.Fatal(err)
		}
		if a, _, err := fs.GetAttr(ctx, f); err != nil || a.Nlink != uint32(2-i) {
			t.Fatalf("after unlink of %s: %+v, %v", name, a, err)
		}
	}
	if err := fs.Unlink(ctx, d, "f3"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := fs.GetAttr(ctx, f); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("the inode survived its last link: %v", err)
	}
	if _, err := fs.Link(ctx, f, d, "f4"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("link to a removed inode: %v, want ENOENT", err)
	}
}

// change is a conditional write of a record.
func change(name string, value []byte, ifMatch *txlog.Hash) txlog.Change {
	return txlog.Change{Name: name, Value: value, IfMatch: ifMatch}
}

// staleLeader answers reads of one record at the leader level as a deposed
// leader would, from an entry it holds but never committed.
type staleLeader struct {
	Log
	part, name string
	value      []byte
}

func (s staleLeader) Do(ctx context.Context, req txlog.Request) (txlog.Response, error) {
	if req.Kind == txlog.KindRead && req.Level == level.Leader && req.Partition == s.part && req.Name == s.name {
		return txlog.Response{Record: txlog.Record{Name: req.Name, Exists: true, Value: s.value, Hash: txlog.Hash{1}}}, nil
	}
	return s.Log.Do(ctx, req)
}

// A rename whose destination a stale leader-level read shows as a link of
// the same inode (a deposed leader holding a cross-directory move's commit
// that never committed) still moves the entry: that nothing is to be done
// is decided on reads at the write level. (A 30-minute Jepsen run saw a
// rename succeed and the old name stay.)
func TestRenameOntoAStaleLinkMoves(t *testing.T) {
	fss := newFS(t, 3)
	fs := fss[0]
	ctx := ctxT(t)
	a, b := mkT(t, fs, Root, "a", TypeDir), mkT(t, fs, Root, "b", TypeDir)
	x := mkT(t, fs, a, "x", TypeFile)
	pa, err := fs.children(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := fs.children(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	e, _, err := fs.entry(ctx, pa, "x")
	if err != nil {
		t.Fatal(err)
	}
	stale := mustFS(t, staleLeader{Log: fs.log, part: PartitionName(pb), name: EntryRecord("x"), value: EncodeEntry(e)}, fs.blocks, Options{Chunk: testChunks, PageShift: testPageShift})
	if err := stale.Rename(ctx, a, "x", b, "x", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Lookup(ctx, a, "x"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("a/x after the rename: %v, want ENOENT", err)
	}
	if got, err := fs.Lookup(ctx, b, "x"); err != nil || got.ID != x {
		t.Errorf("b/x after the rename: %+v, %v", got, err)
	}
}
