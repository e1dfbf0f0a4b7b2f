package inode

import (
	"errors"
	"syscall"
	"testing"
	"time"
)

// stat returns inode id as users see it.
func stat(t *testing.T, fs *FS, id ID) Attr {
	t.Helper()
	a, err := fs.Stat(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// A directory's mtime and ctime move with every change to its entries,
// and its link count is two plus its subdirectories, through every
// operation, within a directory and across two.
func TestDirectoryTimesAndLinks(t *testing.T) {
	fss := newFS(t, 3)
	fs, other := fss[0], fss[1]
	ctx := ctxT(t)
	now := time.Unix(1000, 0)
	fs.clock = func() time.Time { return now }
	d := mkT(t, fs, Root, "d", TypeDir)
	e := mkT(t, fs, Root, "e", TypeDir)
	step := func(what string, op func() error, dir ID, links uint32) {
		t.Helper()
		now = now.Add(time.Second)
		if err := op(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		a := stat(t, other, dir)
		if a.Mtime != now.UnixNano() || a.Ctime != now.UnixNano() || a.Nlink != links {
			t.Errorf("after %s: mtime %v, ctime %v, nlink %d; want %v and %d", what, time.Unix(0, a.Mtime), time.Unix(0, a.Ctime), a.Nlink, now, links)
		}
	}
	if a := stat(t, other, d); a.Nlink != 2 {
		t.Errorf("a new directory has %d links", a.Nlink)
	}
	step("create", func() error { _, _, err := fs.Create(ctx, d, "f", NewAttr{Type: TypeFile}); return err }, d, 2)
	step("mkdir", func() error { _, _, err := fs.Create(ctx, d, "sub", NewAttr{Type: TypeDir}); return err }, d, 3)
	step("symlink", func() error { _, _, err := fs.Create(ctx, d, "l", NewAttr{Type: TypeSymlink, Target: "f"}); return err }, d, 3)
	step("mkfifo", func() error { _, _, err := fs.Create(ctx, d, "p", NewAttr{Type: TypeFifo}); return err }, d, 3)
	f, err := fs.Lookup(ctx, d, "f")
	if err != nil {
		t.Fatal(err)
	}
	step("link", func() error { _, err := fs.Link(ctx, f.ID, d, "f2"); return err }, d, 3)
	step("rename within", func() error { return fs.Rename(ctx, d, "f2", d, "f3", 0) }, d, 3)
	step("unlink", func() error { return fs.Unlink(ctx, d, "f3") }, d, 3)
	step("move a directory out (destination)", func() error { return fs.Rename(ctx, d, "sub", e, "sub", 0) }, e, 3)
	if a := stat(t, other, d); a.Nlink != 2 || a.Mtime != now.UnixNano() {
		t.Errorf("the source after a directory moved out: nlink %d, mtime %v", a.Nlink, time.Unix(0, a.Mtime))
	}
	step("rmdir", func() error { return fs.Rmdir(ctx, e, "sub") }, e, 2)
	// A directory's times set by hand win until its entries change.
	old := time.Unix(500, 0).UnixNano()
	now = now.Add(time.Second)
	if _, err := fs.Setattr(ctx, d, SetAttr{Mtime: &old}); err != nil {
		t.Fatal(err)
	}
	if a := stat(t, other, d); a.Mtime != old || a.Ctime != now.UnixNano() {
		t.Errorf("after touch -d: mtime %v, ctime %v", time.Unix(0, a.Mtime), time.Unix(0, a.Ctime))
	}
	mode := uint32(0o700)
	now = now.Add(time.Second)
	if _, err := fs.Setattr(ctx, d, SetAttr{Mode: &mode}); err != nil {
		t.Fatal(err)
	}
	if a := stat(t, other, d); a.Mtime != old || a.Ctime != now.UnixNano() || a.Mode != 0o700 {
		t.Errorf("after chmod: mtime %v, ctime %v, mode %o", time.Unix(0, a.Mtime), time.Unix(0, a.Ctime), a.Mode)
	}
}

// renameat2's flags: RENAME_NOREPLACE fails on an existing name, and
// RENAME_EXCHANGE swaps two names, within a directory and across two,
// with both directories' link counts following the directories swapped.
func TestRenameFlags(t *testing.T) {
	fss := newFS(t, 3)
	fs, other := fss[0], fss[1]
	ctx := ctxT(t)
	a := mkT(t, fs, Root, "a", TypeDir)
	b := mkT(t, fs, Root, "b", TypeDir)
	x := mkT(t, fs, a, "x", TypeFile)
	y := mkT(t, fs, a, "y", TypeFile)
	if err := fs.Rename(ctx, a, "x", a, "y", RenameNoReplace); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("no-replace onto an existing name: %v, want EEXIST", err)
	}
	if err := fs.Rename(ctx, a, "x", a, "z", RenameNoReplace); err != nil {
		t.Fatalf("no-replace onto a free name: %v", err)
	}
	if err := fs.Rename(ctx, a, "z", a, "nothing", RenameExchange); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("exchange with a missing name: %v, want ENOENT", err)
	}
	if err := fs.Rename(ctx, a, "z", a, "y", RenameNoReplace|RenameExchange); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("both flags: %v, want EINVAL", err)
	}
	if err := fs.Rename(ctx, a, "z", a, "y", RenameExchange); err != nil {
		t.Fatal(err)
	}
	lookupIs := func(dir ID, name string, want ID) {
		t.Helper()
		e, err := other.Lookup(ctx, dir, name)
		if err != nil || e.ID != want {
			t.Errorf("%s is %v, %v; want %v", name, e.ID, err, want)
		}
	}
	lookupIs(a, "z", y)
	lookupIs(a, "y", x)
	// Across directories: a directory and a file change places.
	sub := mkT(t, fs, b, "sub", TypeDir)
	if err := fs.Rename(ctx, a, "y", b, "sub", RenameExchange); err != nil {
		t.Fatal(err)
	}
	lookupIs(a, "y", sub)
	lookupIs(b, "sub", x)
	if got := stat(t, other, a).Nlink; got != 3 {
		t.Errorf("the source holds a directory now: nlink %d, want 3", got)
	}
	if got := stat(t, other, b).Nlink; got != 2 {
		t.Errorf("the destination holds none now: nlink %d, want 2", got)
	}
	if names(t, other, a) == nil || len(names(t, other, b)) != 1 {
		t.Errorf("listings after the exchange: %v, %v", names(t, other, a), names(t, other, b))
	}
}

// An exchange across directories stopped after its mark, or after its
// commit, shows one state or the other, never a mix, and is settled by
// the next to touch it.
func TestExchangeCrashPoints(t *testing.T) {
	fss := newFS(t, 3)
	fs := fss[0]
	ctx := ctxT(t)
	a := mkT(t, fs, Root, "a", TypeDir)
	b := mkT(t, fs, Root, "b", TypeDir)
	x := mkT(t, fs, a, "x", TypeFile)
	y := mkT(t, fs, b, "y", TypeFile)
	pa, _ := fs.children(ctx, a)
	pb, _ := fs.children(ctx, b)
	src, sh, err := fs.liveEntry(ctx, pa, "x", true)
	if err != nil {
		t.Fatal(err)
	}
	dst, _, _ := fs.liveEntry(ctx, pb, "y", true)
	// After the mark alone: nothing has changed for a reader.
	m := Move{Txid: 77, Dest: pb, Since: fs.clock().UnixNano(), Replace: &dst}
	marked := src
	marked.Move = &m
	if _, err := fs.write(ctx, pa, change(EntryRecord("x"), EncodeEntry(marked), &sh)); err != nil {
		t.Fatal(err)
	}
	if e, err := fss[1].Lookup(ctx, a, "x"); err != nil || e.ID != x {
		t.Fatalf("after the mark: a/x is %v, %v", e.ID, err)
	}
	// After the commit: the swapped state at once, on both sides.
	if _, err := fs.write(ctx, pb, change(moveRecord(77), []byte{moveCommitted}, nil), change(EntryRecord("y"), EncodeEntry(src), nil)); err != nil {
		t.Fatal(err)
	}
	if e, err := fss[1].Lookup(ctx, a, "x"); err != nil || e.ID != y {
		t.Fatalf("after the commit: a/x is %v, %v; want %v", e.ID, err, y)
	}
	if e, err := fss[1].Lookup(ctx, b, "y"); err != nil || e.ID != x {
		t.Fatalf("after the commit: b/y is %v, %v; want %v", e.ID, err, x)
	}
	// A change settles it: the entry is the replacement, unmarked.
	if err := fss[2].Rename(ctx, a, "x", a, "w", 0); err != nil {
		t.Fatal(err)
	}
	e, _, err := fs.entry(ctx, pa, "w")
	if err != nil || e.ID != y || e.Move != nil {
		t.Fatalf("a/w after settling: %+v, %v", e, err)
	}
}

// Fifos, sockets and devices are inodes of their own types, with a
// device's number.
func TestSpecialFiles(t *testing.T) {
	fss := newFS(t, 3)
	ctx := ctxT(t)
	for _, na := range []NewAttr{{Type: TypeFifo, Mode: 0o600}, {Type: TypeSocket, Mode: 0o755}, {Type: TypeCharDev, Mode: 0o660, Rdev: 0x0103}, {Type: TypeBlockDev, Mode: 0o660, Rdev: 0x0801}} {
		name := string(rune('a' + na.Type))
		id, _, err := fss[0].Create(ctx, Root, name, na)
		if err != nil {
			t.Fatal(err)
		}
		a := stat(t, fss[1], id)
		if a.Type != na.Type || a.Rdev != na.Rdev || a.Mode != na.Mode {
			t.Errorf("%s: type %d, rdev %#x, mode %o; want %+v", name, a.Type, a.Rdev, a.Mode, na)
		}
		if err := fss[1].Unlink(ctx, Root, name); err != nil {
			t.Fatal(err)
		}
	}
}

// SEEK_DATA and SEEK_HOLE find a sparse file's data and holes, across
// pages, without reading the blocks.
func TestSeekDataAndHoles(t *testing.T) {
	fs := newFS(t, 3)[0]
	ctx := ctxT(t)
	id := newFile(t, fs, "sparse")
	w := fs.NewWriter(id)
	w.WriteAt(random(4096, 1), 10<<20)     // in page 10
	w.WriteAt(random(8192, 2), 40<<20+100) // in page 40
	if _, err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	a, err := fs.Setattr(ctx, id, SetAttr{Size: new(uint64(64 << 20))})
	if err != nil || !a.Paged() {
		t.Fatalf("truncate up: paged %v, %v", a.Paged(), err)
	}
	for _, tc := range []struct {
		off        int64
		data, hole int64 // -1: ENXIO
	}{
		{0, 10 << 20, 0},
		{10 << 20, 10 << 20, 10<<20 + 4096},
		{10<<20 + 5, 10<<20 + 5, 10<<20 + 4096},
		{10<<20 + 4096, 40<<20 + 100, 10<<20 + 4096},
		{40<<20 + 8292, -1, 40<<20 + 8292},
		{64<<20 - 1, -1, 64<<20 - 1},
		{64 << 20, -1, -1},
	} {
		d, err := fs.SeekData(ctx, id, a, tc.off)
		if tc.data < 0 && !errors.Is(err, syscall.ENXIO) || tc.data >= 0 && (err != nil || d != tc.data) {
			t.Errorf("SEEK_DATA from %d: %d, %v; want %d", tc.off, d, err, tc.data)
		}
		h, err := fs.SeekHole(ctx, id, a, tc.off)
		if tc.hole < 0 && !errors.Is(err, syscall.ENXIO) || tc.hole >= 0 && (err != nil || h != tc.hole) {
			t.Errorf("SEEK_HOLE from %d: %d, %v; want %d", tc.off, h, err, tc.hole)
		}
	}
}
