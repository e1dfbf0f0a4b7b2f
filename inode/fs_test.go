package inode

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/internal/memcluster"
)

// newFS runs an in-memory cluster of n hosts and returns a filesystem on
// each, initialized.
func newFS(t *testing.T, n int) []*FS {
	t.Helper()
	var out []*FS
	for _, h := range memcluster.New(t, n) {
		// Small blocks, so that small test files span several.
		out = append(out, mustFS(t, h.Log, h.Blocks, Options{Chunk: testChunks, PageShift: testPageShift}))
	}
	if err := out[0].Init(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	return out
}

// Small blocks and pages, so that small test files span several.
var testChunks = blockstore.ChunkOptions{Min: 16 << 10, Avg: 64 << 10, Max: 256 << 10}

const testPageShift = 20

// mustFS returns a filesystem over log and blocks.
func mustFS(t testing.TB, log Log, blocks Blocks, opts Options) *FS {
	t.Helper()
	f, err := New(log, blocks, opts)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestCreateLookupReaddirUnlink(t *testing.T) {
	fss := newFS(t, 3)
	a, b := fss[0], fss[1]
	ctx := ctxT(t)
	if err := b.Init(ctx); err != nil {
		t.Fatalf("a second Init: %v", err)
	}
	dir, _, err := a.Create(ctx, Root, "docs", NewAttr{Type: TypeDir, Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		if _, _, err := b.Create(ctx, dir, fmt.Sprintf("f%02d", i), NewAttr{Type: TypeFile, Mode: 0o644, UID: 7}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := a.Create(ctx, dir, "f00", NewAttr{Type: TypeFile}); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("create of an existing name: %v, want EEXIST", err)
	}
	link, _, err := a.Create(ctx, dir, "link", NewAttr{Type: TypeSymlink, Mode: 0o777, Target: "f01"})
	if err != nil {
		t.Fatal(err)
	}
	if at, _, err := b.GetAttr(ctx, link); err != nil || at.Target != "f01" || at.Size != 3 {
		t.Errorf("symlink attr = %+v, %v", at, err)
	}
	list, err := b.Readdir(ctx, dir)
	if err != nil || len(list) != 31 || list[0].Name != "f00" || list[30].Name != "link" {
		t.Fatalf("readdir = %d entries, %v", len(list), err)
	}
	for _, e := range list {
		if l, err := a.Lookup(ctx, dir, e.Name); err != nil || l != e.Entry {
			t.Errorf("readdir says %s is %+v, lookup %+v, %v", e.Name, e.Entry, l, err)
		}
	}
	e, err := a.Lookup(ctx, dir, "f05")
	if err != nil || e.Type != TypeFile {
		t.Fatalf("lookup = %+v, %v", e, err)
	}
	if at, _, err := a.GetAttr(ctx, e.ID); err != nil || at.UID != 7 || at.Mode != 0o644 || at.Nlink != 1 {
		t.Errorf("attr = %+v, %v", at, err)
	}
	if err := b.Unlink(ctx, dir, "f05"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Lookup(ctx, dir, "f05"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("lookup after unlink: %v, want ENOENT", err)
	}
	if _, _, err := a.GetAttr(ctx, e.ID); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("the inode of the last link survived: %v", err)
	}
	if err := a.Unlink(ctx, Root, "docs"); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("unlink of a directory: %v, want EISDIR", err)
	}
	for _, bad := range []string{"", ".", "..", "a/b", string(make([]byte, 256))} {
		if _, _, err := a.Create(ctx, dir, bad, NewAttr{Type: TypeFile}); !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENAMETOOLONG) {
			t.Errorf("create %q: %v", bad, err)
		}
	}
	if _, err := a.Lookup(ctx, e.ID, "x"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("lookup in a removed file: %v", err)
	}
	if _, err := a.Lookup(ctx, link, "x"); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("lookup in a symlink: %v, want ENOTDIR", err)
	}
}

// rmdir refuses a directory with entries, and a create racing an rmdir
// either lands before it (and the rmdir fails) or fails itself.
func TestRmdir(t *testing.T) {
	fss := newFS(t, 3)
	ctx := ctxT(t)
	fs := fss[0]
	dir, _, err := fs.Create(ctx, Root, "d", NewAttr{Type: TypeDir, Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := fs.Create(ctx, dir, "x", NewAttr{Type: TypeFile}); err != nil {
		t.Fatal(err)
	}
	if err := fs.Rmdir(ctx, Root, "d"); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("rmdir of a non-empty directory: %v, want ENOTEMPTY", err)
	}
	if err := fs.Unlink(ctx, dir, "x"); err != nil {
		t.Fatal(err)
	}
	if err := fs.Rmdir(ctx, Root, "x"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("rmdir of a missing name: %v", err)
	}
	for round := range 5 {
		name := fmt.Sprintf("r%d", round)
		d, _, err := fs.Create(ctx, Root, name, NewAttr{Type: TypeDir, Mode: 0o755})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var createErr, rmErr error
		wg.Go(func() { _, _, createErr = fss[1].Create(ctx, d, "late", NewAttr{Type: TypeFile}) })
		wg.Go(func() { rmErr = fss[2].Rmdir(ctx, Root, name) })
		wg.Wait()
		switch {
		case createErr == nil && rmErr == nil:
			t.Fatalf("round %d: both the create and the rmdir succeeded: an orphan", round)
		case createErr == nil && !errors.Is(rmErr, syscall.ENOTEMPTY):
			t.Fatalf("round %d: rmdir after a create: %v", round, rmErr)
		case rmErr == nil && !errors.Is(createErr, syscall.ENOENT):
			t.Fatalf("round %d: create after rmdir: %v", round, createErr)
		}
	}
	if err := fs.Rmdir(ctx, Root, "d"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := fs.Create(ctx, dir, "y", NewAttr{Type: TypeFile}); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("create in a removed directory: %v, want ENOENT", err)
	}
}
