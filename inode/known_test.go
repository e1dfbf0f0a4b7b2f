package inode

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/difuse/difuse/internal/memcluster"
	"github.com/difuse/difuse/txlog"
)

// countingLog counts the reads (reads and lists) and writes made through
// it.
type countingLog struct {
	Log
	reads, writes atomic.Int64
}

func (c *countingLog) Do(ctx context.Context, req txlog.Request) (txlog.Response, error) {
	switch req.Kind {
	case txlog.KindRead, txlog.KindList:
		c.reads.Add(1)
	case txlog.KindWrite:
		c.writes.Add(1)
	}
	return c.Log.Do(ctx, req)
}

// Changes start from the records the FS last read or wrote, without
// reading them again; when another FS changed them meanwhile, the change
// is made on what is there now, never on the stale copy.
func TestChangesStartFromKnown(t *testing.T) {
	hosts := memcluster.New(t, 3)
	log := &countingLog{Log: hosts[0].Log}
	a, b := mustFS(t, log, hosts[0].Blocks, Options{}), mustFS(t, hosts[1].Log, hosts[1].Blocks, Options{})
	ctx := ctxT(t)
	if err := a.Init(ctx); err != nil {
		t.Fatal(err)
	}
	dir, _, err := a.Create(ctx, Root, "d", NewAttr{Type: TypeDir, Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	mk := func(fs *FS, name string) ID {
		t.Helper()
		id, _, err := fs.Create(ctx, dir, name, NewAttr{Type: TypeFile, Mode: 0o644})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	// requests runs op and returns the reads and writes it made through a.
	requests := func(op func() error) (reads, writes int64) {
		t.Helper()
		r0, w0 := log.reads.Load(), log.writes.Load()
		if err := op(); err != nil {
			t.Fatal(err)
		}
		return log.reads.Load() - r0, log.writes.Load() - w0
	}

	// A file a created, written and closed: one write each, no read.
	f := mk(a, "f")
	w := a.NewWriter(f)
	w.WriteAt([]byte("hello"), 0)
	if r, wr := requests(func() error { _, err := w.Flush(ctx); return err }); r != 0 || wr != 1 {
		t.Errorf("flush of a file just created: %d reads, %d writes; want 0, 1", r, wr)
	}
	mode := uint32(0o600)
	if r, wr := requests(func() error { _, err := a.Setattr(ctx, f, SetAttr{Mode: &mode}); return err }); r != 0 || wr != 1 {
		t.Errorf("setattr: %d reads, %d writes; want 0, 1", r, wr)
	}

	// b changes the file; a's change then keeps b's.
	uid := uint32(42)
	if _, err := b.Setattr(ctx, f, SetAttr{UID: &uid}); err != nil {
		t.Fatal(err)
	}
	w.WriteAt([]byte("J"), 0)
	if _, err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _, err := b.GetAttr(ctx, f); err != nil || got.UID != 42 || got.Mode != 0o600 || string(got.Inline) != "Jello" {
		t.Errorf("after changes by both: %+v, %v; want uid 42, mode 0600, Jello", got, err)
	}

	// An unlink of a listed name: one write, no read.
	mk(b, "g")
	if _, err := a.Readdir(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if r, wr := requests(func() error { return a.Unlink(ctx, dir, "g") }); r != 0 || wr != 1 {
		t.Errorf("unlink of a listed name: %d reads, %d writes; want 0, 1", r, wr)
	}

	// b replaces a name a knows by a directory: a's unlink says EISDIR
	// and leaves it.
	mk(a, "h")
	if err := b.Unlink(ctx, dir, "h"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Create(ctx, dir, "h", NewAttr{Type: TypeDir, Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	if err := a.Unlink(ctx, dir, "h"); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("unlink of a name b made a directory: %v, want EISDIR", err)
	}
	if e, err := b.Lookup(ctx, dir, "h"); err != nil || e.Type != TypeDir {
		t.Errorf("the directory after a's unlink: %+v, %v", e, err)
	}

	// b links a file a knows with one link; a's unlink of its first name
	// keeps the inode for the second.
	k := mk(a, "k")
	if _, err := b.Link(ctx, k, dir, "k2"); err != nil {
		t.Fatal(err)
	}
	if err := a.Unlink(ctx, dir, "k"); err != nil {
		t.Fatal(err)
	}
	if got, _, err := b.GetAttr(ctx, k); err != nil || got.Nlink != 1 {
		t.Errorf("inode after unlinking one of two names: %+v, %v; want 1 link", got, err)
	}
	if _, err := a.Lookup(ctx, dir, "k2"); err != nil {
		t.Errorf("the second name: %v", err)
	}
}

// known stays within its bounds: bytes, count and the largest value, and
// replacing a record counts only its new value.
func TestKnownBounds(t *testing.T) {
	k := newKnown()
	value := make([]byte, 4<<10)
	for i := range maxKnownBytes / len(value) * 2 {
		k.note(1, fmt.Sprint(i), value, txlog.Hash{1})
	}
	if k.bytes > maxKnownBytes || k.c.Len() != maxKnownBytes/len(value) {
		t.Errorf("after twice the budget: %d bytes in %d records; want at most %d", k.bytes, k.c.Len(), maxKnownBytes)
	}
	k.note(1, "0x", value, txlog.Hash{2})
	before := k.bytes
	k.note(1, "0x", value[:10], txlog.Hash{3})
	if v, ok := k.get(1, "0x"); !ok || v.hash != (txlog.Hash{3}) || k.bytes != before-len(value)+10 {
		t.Errorf("a replaced record: %v %v, %d bytes (was %d)", v.hash, ok, k.bytes, before)
	}
	k.note(1, "big", make([]byte, maxKnownValue+1), txlog.Hash{4})
	if _, ok := k.get(1, "big"); ok {
		t.Error("a value above maxKnownValue was kept")
	}
	for i := range maxKnown + 10 {
		k.note(2, fmt.Sprint(i), nil, txlog.Hash{5})
	}
	if k.c.Len() != maxKnown {
		t.Errorf("%d records, want %d", k.c.Len(), maxKnown)
	}
}
