package fsnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"bazil.org/fuse"
	"bazil.org/fuse/fs"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/inode"
	"github.com/difuse/difuse/internal/memcluster"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/txlog"
)

// newFS returns the FUSE layer of a filesystem on each host of an
// in-memory 3-host cluster, for calls on nodes without the kernel.
// mustInode returns the inode layer over log and blocks.
func mustInode(t testing.TB, log inode.Log, blocks inode.Blocks, opts inode.Options) *inode.FS {
	t.Helper()
	f, err := inode.New(log, blocks, opts)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func newFS(t *testing.T, opts Options) []*FS {
	t.Helper()
	var out []*FS
	for _, h := range memcluster.New(t, 3) {
		out = append(out, New(mustInode(t, h.Log, h.Blocks, inode.Options{}), opts))
	}
	if err := out[0].fs.Init(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	return out
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func root(t *testing.T, s *FS) *Node {
	r, err := s.Root()
	if err != nil {
		t.Fatal(err)
	}
	return r.(*Node)
}

func lookup(t *testing.T, dir *Node, name string) (*Node, error) {
	n, err := dir.Lookup(ctxT(t), &fuse.LookupRequest{Name: name}, &fuse.LookupResponse{})
	if err != nil {
		return nil, err
	}
	return n.(*Node), nil
}

func create(t *testing.T, dir *Node, name string) *Node {
	t.Helper()
	n, _, err := dir.Create(ctxT(t), &fuse.CreateRequest{Name: name, Mode: 0o644}, &fuse.CreateResponse{})
	if err != nil {
		t.Fatal(err)
	}
	attr(t, n.(*Node)) // as the kernel's create does
	return n.(*Node)
}

func read(t *testing.T, n *Node, off int64, size int) []byte {
	t.Helper()
	var resp fuse.ReadResponse
	if err := n.Read(ctxT(t), &fuse.ReadRequest{Offset: off, Size: size}, &resp); err != nil {
		t.Fatal(err)
	}
	return resp.Data
}

func attr(t *testing.T, n *Node) fuse.Attr {
	t.Helper()
	var a fuse.Attr
	if err := n.Attr(ctxT(t), &a); err != nil {
		t.Fatal(err)
	}
	return a
}

// Writes buffer in the node until a flush, a large buffer, or a read;
// another host sees them once committed.
func TestWriteFlushRead(t *testing.T) {
	fss := newFS(t, Options{FlushBytes: 1 << 20, AttrValid: time.Nanosecond}) // reads see every commit
	ctx := ctxT(t)
	f := create(t, root(t, fss[0]), "f")
	data := bytes.Repeat([]byte("difuse "), 100000) // 700,000 bytes
	for off := 0; off < len(data); off += 128 << 10 {
		chunk := data[off:min(off+128<<10, len(data))]
		var resp fuse.WriteResponse
		if err := f.Write(ctx, &fuse.WriteRequest{Offset: int64(off), Data: chunk}, &resp); err != nil || resp.Size != len(chunk) {
			t.Fatalf("write at %d: %d, %v", off, resp.Size, err)
		}
	}
	if a := attr(t, f); a.Size != uint64(len(data)) {
		t.Errorf("size while buffered: %d", a.Size)
	}
	other, err := lookup(t, root(t, fss[1]), "f")
	if err != nil {
		t.Fatal(err)
	}
	if a := attr(t, other); a.Size != 0 {
		t.Errorf("another host sees %d bytes before the flush", a.Size)
	}
	if err := f.Flush(ctx, &fuse.FlushRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, other, 0, len(data)+10); !bytes.Equal(got, data) {
		t.Errorf("another host reads %d bytes, want %d", len(got), len(data))
	}
	// Past the threshold a write starts a commit by itself, in the
	// background: another host sees the bytes without a flush.
	big := bytes.Repeat([]byte{7}, 2<<20)
	if err := f.Write(ctx, &fuse.WriteRequest{Offset: int64(len(data)), Data: big}, &fuse.WriteResponse{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		a := attr(t, other)
		if a.Size == uint64(len(data)+len(big)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after a write past the threshold another host sees %d bytes", a.Size)
		}
	}
	// A read of buffered bytes commits them first.
	if err := f.Write(ctx, &fuse.WriteRequest{Offset: 0, Data: []byte("DIFUSE")}, &fuse.WriteResponse{}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, f, 0, 7); string(got) != "DIFUSE " {
		t.Errorf("read after an overwrite: %q", got)
	}
}

// Errors reach the kernel as the errno POSIX names.
func TestErrnos(t *testing.T) {
	fss := newFS(t, Options{})
	ctx := ctxT(t)
	r := root(t, fss[0])
	if _, err := lookup(t, r, "missing"); !errors.Is(err, fuse.Errno(syscall.ENOENT)) {
		t.Errorf("lookup of a missing name: %v", err)
	}
	create(t, r, "f")
	if _, _, err := r.Create(ctx, &fuse.CreateRequest{Name: "f", Mode: 0o644}, &fuse.CreateResponse{}); !errors.Is(err, fuse.Errno(syscall.EEXIST)) {
		t.Errorf("create of an existing name: %v", err)
	}
	d, err := r.Mkdir(ctx, &fuse.MkdirRequest{Name: "d", Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	create(t, d.(*Node), "inner")
	if err := r.Remove(ctx, &fuse.RemoveRequest{Name: "d", Dir: true}); !errors.Is(err, fuse.Errno(syscall.ENOTEMPTY)) {
		t.Errorf("rmdir of a non-empty directory: %v", err)
	}
	if err := r.Remove(ctx, &fuse.RemoveRequest{Name: "f", Dir: true}); !errors.Is(err, fuse.Errno(syscall.ENOTDIR)) {
		t.Errorf("rmdir of a file: %v", err)
	}
	if err := r.Remove(ctx, &fuse.RemoveRequest{Name: "d"}); !errors.Is(err, fuse.Errno(syscall.EISDIR)) {
		t.Errorf("unlink of a directory: %v", err)
	}
	f, _ := lookup(t, r, "f")
	if err := f.Getxattr(ctx, &fuse.GetxattrRequest{Name: "user.none"}, &fuse.GetxattrResponse{}); !errors.Is(err, fuse.ErrNoXattr) {
		t.Errorf("getxattr of a missing name: %v", err)
	}
	if _, err := r.Link(ctx, &fuse.LinkRequest{NewName: "d2"}, d); !errors.Is(err, fuse.Errno(syscall.EPERM)) {
		t.Errorf("link to a directory: %v", err)
	}
	// The kernel interrupting an operation does not cut it short.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	octx, ocancel := fss[0].ctx(cctx)
	defer ocancel()
	if octx.Err() != nil {
		t.Errorf("an interrupted operation's context: %v", octx.Err())
	}
	if _, ok := octx.Deadline(); !ok {
		t.Error("an operation without a deadline")
	}
	// Anything without an errno is EIO.
	if err := fss[0].errno("lookup", errors.New("replicas unavailable")); !errors.Is(err, fuse.Errno(syscall.EIO)) {
		t.Errorf("a plain error: %v", err)
	}
}

// Renames across directories and hard links, through nodes; an open file
// whose last name goes keeps its attributes, with no links.
func TestNamesThroughNodes(t *testing.T) {
	fss := newFS(t, Options{})
	ctx := ctxT(t)
	r := root(t, fss[0])
	a, _ := r.Mkdir(ctx, &fuse.MkdirRequest{Name: "a", Mode: 0o755})
	b, _ := r.Mkdir(ctx, &fuse.MkdirRequest{Name: "b", Mode: 0o755})
	f := create(t, a.(*Node), "f")
	f.Write(ctx, &fuse.WriteRequest{Data: []byte("content")}, &fuse.WriteResponse{})
	if err := f.Flush(ctx, &fuse.FlushRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := a.(*Node).Rename(ctx, &fuse.RenameRequest{OldName: "f", NewName: "g"}, b); err != nil {
		t.Fatal(err)
	}
	g, err := lookup(t, b.(*Node), "g")
	if err != nil || g != f {
		t.Fatalf("b/g after the move: %v, same node %v", err, g == f)
	}
	if _, err := r.Link(ctx, &fuse.LinkRequest{NewName: "h"}, g); err != nil {
		t.Fatal(err)
	}
	if got := attr(t, g); got.Nlink != 2 {
		t.Errorf("nlink after link: %d", got.Nlink)
	}
	for _, rm := range []struct {
		dir  *Node
		name string
	}{{b.(*Node), "g"}, {r, "h"}} {
		if err := rm.dir.Remove(ctx, &fuse.RemoveRequest{Name: rm.name}); err != nil {
			t.Fatal(err)
		}
	}
	if got := attr(t, g); got.Nlink != 0 || got.Size != 7 {
		t.Errorf("the unlinked file's attributes: nlink %d, size %d", got.Nlink, got.Size)
	}
	if got := read(t, g, 0, 100); string(got) != "content" {
		t.Errorf("the unlinked file reads %q", got)
	}
	list, err := fss[1].node(inode.Root).ReadDirAll(ctx)
	if err != nil || len(list) != 4 || list[0].Name != "." || list[1].Name != ".." {
		t.Errorf("root lists %+v, %v", list, err)
	}
}

var (
	_ fs.HandleFlusher  = (*Node)(nil)
	_ fs.HandleReleaser = (*Node)(nil)
)

// Owner, mode and times set while writes are buffered commit with them,
// in one transaction, as cp -a sets them before it closes a file.
func TestAttrsWithBufferedWrites(t *testing.T) {
	fss := newFS(t, Options{AttrValid: time.Nanosecond})
	ctx := ctxT(t)
	f := create(t, root(t, fss[0]), "f")
	f.Write(ctx, &fuse.WriteRequest{Data: []byte("data")}, &fuse.WriteResponse{})
	mtime := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	req := &fuse.SetattrRequest{Valid: fuse.SetattrMode | fuse.SetattrUid | fuse.SetattrMtime, Mode: 0o600, Uid: 42, Mtime: mtime}
	var resp fuse.SetattrResponse
	if err := f.Setattr(ctx, req, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Attr.Mode.Perm() != 0o600 || resp.Attr.Uid != 42 || !resp.Attr.Mtime.Equal(mtime) || resp.Attr.Size != 4 {
		t.Errorf("setattr answers %+v", resp.Attr)
	}
	if got := attr(t, f); got.Uid != 42 {
		t.Errorf("the node shows uid %d while buffered", got.Uid)
	}
	other, _ := lookup(t, root(t, fss[1]), "f")
	if got := attr(t, other); got.Uid == 42 || got.Size != 0 {
		t.Errorf("another host sees uid %d, size %d before the commit", got.Uid, got.Size)
	}
	if err := f.Flush(ctx, &fuse.FlushRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := attr(t, other); got.Uid != 42 || got.Mode.Perm() != 0o600 || !got.Mtime.Equal(mtime) || got.Size != 4 {
		t.Errorf("after the commit another host sees %+v", got)
	}
	// A write after the times were set sets them again.
	f.Write(ctx, &fuse.WriteRequest{Data: []byte("more"), Offset: 4}, &fuse.WriteResponse{})
	f.Setattr(ctx, &fuse.SetattrRequest{Valid: fuse.SetattrMtime, Mtime: mtime}, &fuse.SetattrResponse{})
	f.Write(ctx, &fuse.WriteRequest{Data: []byte("!"), Offset: 8}, &fuse.WriteResponse{})
	if err := f.Flush(ctx, &fuse.FlushRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := attr(t, other); got.Mtime.Equal(mtime) || got.Size != 9 {
		t.Errorf("after a later write: mtime %v, size %d", got.Mtime, got.Size)
	}
}

// countingLog counts the transaction-log requests a filesystem makes.
type countingLog struct {
	inode.Log
	n atomic.Int64
}

func (c *countingLog) Do(ctx context.Context, req txlog.Request) (txlog.Response, error) {
	c.n.Add(1)
	return c.Log.Do(ctx, req)
}

// A listing carries the attributes of the inodes created in the
// directory, and lookups right after it (ls -l) take their entry and
// attributes from it instead of reading them; a change through the mount,
// or the entry timeout, makes them read again.
func TestListingServesLookups(t *testing.T) {
	hosts := memcluster.New(t, 3)
	writer := New(mustInode(t, hosts[0].Log, hosts[0].Blocks, inode.Options{}), Options{})
	ctx := ctxT(t)
	if err := writer.fs.Init(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := root(t, writer).Mkdir(ctx, &fuse.MkdirRequest{Name: "d", Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		f := create(t, d.(*Node), fmt.Sprint("f", i))
		if err := f.Write(ctx, &fuse.WriteRequest{Data: bytes.Repeat([]byte{1}, i)}, &fuse.WriteResponse{}); err != nil {
			t.Fatal(err)
		}
		if err := f.Flush(ctx, &fuse.FlushRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	log := &countingLog{Log: hosts[1].Log}
	clock := newFakeClock()
	reader := New(mustInode(t, log, hosts[1].Blocks, inode.Options{Clock: clock.now}), Options{EntryValid: 500 * time.Millisecond})
	dir, err := lookup(t, root(t, reader), "d")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dir.ReadDirAll(ctx); err != nil {
		t.Fatal(err)
	}
	before := log.n.Load()
	for i := range 20 {
		n, err := lookup(t, dir, fmt.Sprint("f", i))
		if err != nil {
			t.Fatal(err)
		}
		if a := attr(t, n); a.Size != uint64(i) {
			t.Errorf("f%d: size %d from the listing", i, a.Size)
		}
	}
	if n := log.n.Load() - before; n != 0 {
		t.Errorf("20 lookups and getattrs after a listing made %d requests, want 0", n)
	}
	// Each name is taken from the listing once: a second lookup reads.
	if _, err := lookup(t, dir, "f0"); err != nil || log.n.Load() == before {
		t.Errorf("a second lookup of f0: %v, %d requests", err, log.n.Load()-before)
	}
	// A change through the mount drops the listing.
	if _, err := dir.ReadDirAll(ctx); err != nil {
		t.Fatal(err)
	}
	if err := dir.Remove(ctx, &fuse.RemoveRequest{Name: "f1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := lookup(t, dir, "f1"); !errors.Is(err, fuse.Errno(syscall.ENOENT)) {
		t.Errorf("lookup of f1 after its unlink: %v", err)
	}
	// So does time.
	if _, err := dir.ReadDirAll(ctx); err != nil {
		t.Fatal(err)
	}
	clock.advance(600 * time.Millisecond)
	before = log.n.Load()
	if _, err := lookup(t, dir, "f2"); err != nil || log.n.Load() == before {
		t.Errorf("a lookup after the entry timeout: %v, %d requests", err, log.n.Load()-before)
	}
}

// The kernel's attribute requests take the inode as this mount last read
// or wrote it, while that is younger than the attribute timeout, and the
// kernel may keep the answer only for what is left of it. A change this
// mount makes to an inode through another of its names (an unlink of a
// second link) makes the next request read.
func TestAttrsFromRecentReads(t *testing.T) {
	hosts := memcluster.New(t, 3)
	log := &countingLog{Log: hosts[0].Log}
	const valid = 500 * time.Millisecond
	clock := newFakeClock()
	s := New(mustInode(t, log, hosts[0].Blocks, inode.Options{Clock: clock.now}), Options{AttrValid: valid})
	other := New(mustInode(t, hosts[1].Log, hosts[1].Blocks, inode.Options{}), Options{})
	ctx := ctxT(t)
	if err := s.fs.Init(ctx); err != nil {
		t.Fatal(err)
	}
	f := create(t, root(t, s), "f")
	if err := f.Write(ctx, &fuse.WriteRequest{Data: []byte("data")}, &fuse.WriteResponse{}); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(ctx, &fuse.FlushRequest{}); err != nil {
		t.Fatal(err)
	}
	before := log.n.Load()
	a := attr(t, f)
	if n := log.n.Load() - before; n != 0 || a.Size != 4 || a.Valid > valid {
		t.Errorf("getattr after a flush: %d requests, size %d, valid %s; want 0, 4, at most %s", n, a.Size, a.Valid, valid)
	}

	// Another mount's change shows once the timeout is over.
	of, err := lookup(t, root(t, other), "f")
	if err != nil {
		t.Fatal(err)
	}
	if err := of.Setattr(ctx, &fuse.SetattrRequest{Valid: fuse.SetattrMode, Mode: 0o600}, &fuse.SetattrResponse{}); err != nil {
		t.Fatal(err)
	}
	clock.advance(valid)
	if a := attr(t, f); a.Mode.Perm() != 0o600 {
		t.Errorf("mode after another mount's chmod and the timeout: %v", a.Mode)
	}

	// A second name, and the first unlinked: one link left, at once.
	if _, err := root(t, s).Link(ctx, &fuse.LinkRequest{NewName: "g"}, f); err != nil {
		t.Fatal(err)
	}
	if a := attr(t, f); a.Nlink != 2 {
		t.Errorf("links after link: %d", a.Nlink)
	}
	if err := root(t, s).Remove(ctx, &fuse.RemoveRequest{Name: "f"}); err != nil {
		t.Fatal(err)
	}
	if a := attr(t, f); a.Nlink != 1 {
		t.Errorf("links after unlinking one of two names: %d, want 1", a.Nlink)
	}
}

// A walk through a directory (rm -rf, ls -l) keeps its listing: an unlink
// drops only its own name, and once the listing has expired after serving
// many lookups, the next lookup lists the directory again instead of
// reading each name.
func TestListingFollowsAWalk(t *testing.T) {
	hosts := memcluster.New(t, 3)
	log := &countingLog{Log: hosts[0].Log}
	const valid = time.Minute // long enough for a loaded machine; expired by hand below
	s := New(mustInode(t, log, hosts[0].Blocks, inode.Options{}), Options{EntryValid: valid})
	ctx := ctxT(t)
	if err := s.fs.Init(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := root(t, s).Mkdir(ctx, &fuse.MkdirRequest{Name: "d", Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	dir := d.(*Node)
	const files = 2 * walkUses
	for i := range files {
		create(t, dir, fmt.Sprint("f", i))
	}
	if _, err := dir.ReadDirAll(ctx); err != nil {
		t.Fatal(err)
	}
	// requests returns the requests op made.
	requests := func(op func()) int64 {
		before := log.n.Load()
		op()
		return log.n.Load() - before
	}
	// rm: lookup, unlink; only the unlinks make requests.
	for i := range walkUses {
		name := fmt.Sprint("f", i)
		if n := requests(func() {
			if _, err := lookup(t, dir, name); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Fatalf("lookup of %s after unlinks of others: %d requests, want 0", name, n)
		}
		if err := dir.Remove(ctx, &fuse.RemoveRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := lookup(t, dir, "f0"); !errors.Is(err, fuse.Errno(syscall.ENOENT)) {
		t.Errorf("lookup of an unlinked name: %v", err)
	}
	dir.mu.Lock()
	dir.listedAt = dir.listedAt.Add(-valid)
	dir.mu.Unlock()
	// The expired listing served a walk: one listing for the rest.
	if n := requests(func() {
		for i := walkUses; i < files; i++ {
			if _, err := lookup(t, dir, fmt.Sprint("f", i)); err != nil {
				t.Fatal(err)
			}
		}
	}); n != 1 {
		t.Errorf("%d lookups after the listing expired: %d requests, want 1 (a listing)", files-walkUses, n)
	}
}

// A file unlinked while open keeps working for its handles: writes not yet
// flushed survive the unlink, later writes and reads work, and the last
// close reclaims the inode.
func TestUnlinkedWhileOpen(t *testing.T) {
	fss := newFS(t, Options{})
	ctx := ctxT(t)
	r := root(t, fss[0])
	f := create(t, r, "f") // open, as create opens
	write := func(off int64, s string) {
		t.Helper()
		if err := f.Write(ctx, &fuse.WriteRequest{Offset: off, Data: []byte(s)}, &fuse.WriteResponse{}); err != nil {
			t.Fatal(err)
		}
	}
	write(0, "before ")
	if err := r.Remove(ctx, &fuse.RemoveRequest{Name: "f"}); err != nil {
		t.Fatal(err)
	}
	if _, err := lookup(t, r, "f"); !errors.Is(err, fuse.Errno(syscall.ENOENT)) {
		t.Fatalf("lookup of the unlinked name: %v", err)
	}
	write(7, "after")
	if got := read(t, f, 0, 100); string(got) != "before after" {
		t.Fatalf("the unlinked file reads %q", got)
	}
	if err := f.Fsync(ctx, &fuse.FsyncRequest{}); err != nil {
		t.Fatalf("fsync of the unlinked file: %v", err)
	}
	if a := attr(t, f); a.Nlink != 0 || a.Size != 12 {
		t.Errorf("the unlinked file's attributes: nlink %d, size %d", a.Nlink, a.Size)
	}
	if _, _, err := fss[1].fs.GetAttr(ctx, f.id); err != nil {
		t.Fatalf("the inode is gone while open: %v", err)
	}
	if err := f.Flush(ctx, &fuse.FlushRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := f.Release(ctx, &fuse.ReleaseRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := fss[1].fs.GetAttr(ctx, f.id); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("the inode after its last close: %v, want ENOENT", err)
	}
	// A file not open here goes with its last name at once.
	g := create(t, r, "g")
	g.Release(ctx, &fuse.ReleaseRequest{})
	if err := r.Remove(ctx, &fuse.RemoveRequest{Name: "g"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := fss[1].fs.GetAttr(ctx, g.id); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("a closed file's inode after unlink: %v, want ENOENT", err)
	}
}

// However many files are written at once, their buffers together stay
// within DirtyBytes (give or take one write).
func TestDirtyBytesBound(t *testing.T) {
	const budget = 1 << 20
	fss := newFS(t, Options{DirtyBytes: budget, FlushBytes: 64 << 20})
	ctx := ctxT(t)
	r := root(t, fss[0])
	var files []*Node
	for i := range 8 {
		files = append(files, create(t, r, fmt.Sprint("f", i)))
	}
	chunk := bytes.Repeat([]byte{1}, 64<<10)
	peak := int64(0)
	for round := range 16 {
		for i, f := range files {
			chunk[0] = byte(round + i)
			if err := f.Write(ctx, &fuse.WriteRequest{Offset: int64(round) * int64(len(chunk)), Data: chunk}, &fuse.WriteResponse{}); err != nil {
				t.Fatal(err)
			}
			peak = max(peak, fss[0].fs.Dirty())
		}
	}
	if peak > budget+int64(len(chunk)) {
		t.Errorf("the open files buffered %d bytes together, over the %d allowed", peak, budget)
	}
	for _, f := range files {
		if err := f.Flush(ctx, &fuse.FlushRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if d := fss[0].fs.Dirty(); d != 0 {
		t.Errorf("%d bytes counted as buffered after every flush", d)
	}
	if got := read(t, files[3], 15*int64(len(chunk)), 1); got[0] != byte(15+3) {
		t.Errorf("the last write of a file reads %d", got[0])
	}
}

// slowBlocks takes delay over each block it stores, or forever once hang
// is set.
type slowBlocks struct {
	inode.Blocks
	delay time.Duration
	hang  atomic.Bool
}

func (s *slowBlocks) Set(ctx context.Context, data []byte, l level.Level) (blockstore.Hash, error) {
	if s.hang.Load() {
		<-ctx.Done()
		return blockstore.Hash{}, ctx.Err()
	}
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return blockstore.Hash{}, ctx.Err()
	}
	return s.Blocks.Set(ctx, data, l)
}

// A commit that is slow but moves is never cut short, however long it
// takes in all; one that stops moving fails after StallTimeout with EIO,
// and the log says why.
func TestCommitBoundedByProgress(t *testing.T) {
	hosts := memcluster.New(t, 3)
	slow := &slowBlocks{Blocks: hosts[0].Blocks, delay: 40 * time.Millisecond}
	var logged bytes.Buffer
	s := New(mustInode(t, hosts[0].Log, slow, inode.Options{Chunk: blockstore.ChunkOptions{Min: 16 << 10, Avg: 32 << 10, Max: 64 << 10}}),
		Options{OpTimeout: 200 * time.Millisecond, StallTimeout: 300 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	ctx := ctxT(t)
	if err := s.fs.Init(ctx); err != nil {
		t.Fatal(err)
	}
	f := create(t, root(t, s), "f")
	// About 60 blocks stored four at a time, 40 ms each: over half a
	// second, longer than the operation timeout and the stall bound.
	data := random(2<<20, 1)
	f.Write(ctx, &fuse.WriteRequest{Data: data}, &fuse.WriteResponse{})
	start := time.Now()
	if err := f.Flush(ctx, &fuse.FlushRequest{}); err != nil {
		t.Fatalf("a slow commit failed after %v: %v", time.Since(start), err)
	}
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Fatalf("the slow commit took only %v: the test proves nothing", took)
	}
	slow.hang.Store(true)
	f.Write(ctx, &fuse.WriteRequest{Offset: int64(len(data)), Data: random(100<<10, 2)}, &fuse.WriteResponse{})
	if err := f.Flush(ctx, &fuse.FlushRequest{}); !errors.Is(err, fuse.Errno(syscall.EIO)) {
		t.Fatalf("a stuck commit: %v, want EIO", err)
	}
	if !strings.Contains(logged.String(), "no progress for 300ms") {
		t.Errorf("the log does not say why: %s", logged.String())
	}
}

func random(n int, seed byte) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// mknod makes fifos, sockets and devices, which report their types and
// device numbers; a directory's listing starts with "." and "..", and its
// link count and times follow its entries.
func TestSpecialFilesAndDirectories(t *testing.T) {
	fss := newFS(t, Options{AttrValid: time.Minute}) // long: changes must drop what is kept
	ctx := ctxT(t)
	r := root(t, fss[0])
	for _, tc := range []struct {
		name string
		mode os.FileMode
		rdev uint32
	}{{"fifo", os.ModeNamedPipe | 0o600, 0}, {"sock", os.ModeSocket | 0o755, 0}, {"tty", os.ModeDevice | os.ModeCharDevice | 0o620, 0x0401}, {"disk", os.ModeDevice | 0o660, 0x0800}} {
		n, err := r.Mknod(ctx, &fuse.MknodRequest{Name: tc.name, Mode: tc.mode, Rdev: tc.rdev})
		if err != nil {
			t.Fatalf("mknod %s: %v", tc.name, err)
		}
		if a := attr(t, n.(*Node)); a.Mode != tc.mode || a.Rdev != tc.rdev {
			t.Errorf("%s: mode %v, rdev %#x; want %v, %#x", tc.name, a.Mode, a.Rdev, tc.mode, tc.rdev)
		}
	}
	before := attr(t, r)
	d, err := r.Mkdir(ctx, &fuse.MkdirRequest{Name: "d", Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	after := attr(t, r)
	if after.Nlink != before.Nlink+1 || !after.Mtime.After(before.Mtime) {
		t.Errorf("the root after mkdir: nlink %d (was %d), mtime %v (was %v)", after.Nlink, before.Nlink, after.Mtime, before.Mtime)
	}
	list, err := d.(*Node).ReadDirAll(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "." || list[1].Name != ".." || list[0].Inode != d.(*Node).inum() || list[1].Inode != r.inum() {
		t.Errorf("an empty directory lists %+v, %v", list, err)
	}
	list, err = r.ReadDirAll(ctx)
	types := map[string]fuse.DirentType{}
	for _, e := range list {
		types[e.Name] = e.Type
	}
	if err != nil || types["fifo"] != fuse.DT_FIFO || types["sock"] != fuse.DT_Socket || types["tty"] != fuse.DT_Char || types["disk"] != fuse.DT_Block || types["d"] != fuse.DT_Dir {
		t.Errorf("the root lists %v, %v", types, err)
	}
	if err := r.Remove(ctx, &fuse.RemoveRequest{Name: "d", Dir: true}); err != nil {
		t.Fatal(err)
	}
	if a := attr(t, r); a.Nlink != before.Nlink {
		t.Errorf("the root after rmdir: nlink %d, want %d", a.Nlink, before.Nlink)
	}
}

// fakeClock is a clock that moves only when a test advances it.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }
