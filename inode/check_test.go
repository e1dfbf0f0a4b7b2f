package inode

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/internal/memcluster"
	"github.com/difuse/difuse/txlog"
)

// holders counts block replicas through one host's block store.
type holders struct{ s *blockstore.Service }

func (h holders) BlockCheck(ctx context.Context, hashes []blockstore.Hash) (held, of []int, err error) {
	return h.s.Count(ctx, hashes)
}

// Check finds an entry naming a missing inode, a wrong link count and a
// block missing from a replica; with Repair it fixes all three, and a
// second check finds nothing.
func TestCheck(t *testing.T) {
	hosts := memcluster.New(t, 3)
	fs := mustFS(t, hosts[0].Log, hosts[0].Blocks, Options{Chunk: testChunks, PageShift: testPageShift})
	ctx := ctxT(t)
	if err := fs.Init(ctx); err != nil {
		t.Fatal(err)
	}
	d := mkT(t, fs, Root, "d", TypeDir)
	big, _, err := fs.Create(ctx, d, "big", NewAttr{Type: TypeFile, Mode: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	w := fs.NewWriter(big)
	w.WriteAt(random(1<<20, 7), 0)
	a, err := w.Flush(ctx)
	ext := extentsOf(t, fs, big, a)
	if err != nil || len(ext) < 2 {
		t.Fatalf("write: %d extents, %v", len(ext), err)
	}
	linked := mkT(t, fs, Root, "linked", TypeFile)
	if _, err := fs.Link(ctx, linked, d, "linked2"); err != nil {
		t.Fatal(err)
	}
	gone := mkT(t, fs, d, "gone", TypeFile)
	high := mkT(t, fs, d, "high", TypeFile)
	mkT(t, fs, d, "fine", TypeSymlink)

	for _, h := range hosts {
		h.Blocks.Wait() // the third replica of each block, sent in the background
	}
	clean := func() CheckOptions { return CheckOptions{Replicas: 3, Blocks: holders{hosts[1].Blocks}} }
	if rep, err := fs.Check(ctx, clean()); err != nil || len(rep.Problems) != 0 || rep.Files != 4 || rep.Dirs != 2 || rep.Symlinks != 1 || rep.Blocks != int64(len(ext)) {
		t.Fatalf("check of a sound filesystem: %+v, %v", rep, err)
	}

	// Damage: gone's inode deleted under its entry; linked's link count
	// below its entries, high's above; a block of big deleted from one
	// replica.
	if _, err := fs.write(ctx, gone.Part, txlog.Change{Name: InodeRecord(gone.Num), Delete: true}); err != nil {
		t.Fatal(err)
	}
	setNlink := func(id ID, n uint32) {
		a, h, err := fs.GetAttr(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		a.Nlink = n
		if _, err := fs.write(ctx, id.Part, txlog.Change{Name: InodeRecord(id.Num), Value: EncodeAttr(a), IfMatch: &h}); err != nil {
			t.Fatal(err)
		}
	}
	setNlink(linked, 1)
	setNlink(high, 3)
	block := ext[0].Block
	deleted := 0
	for _, h := range hosts {
		if ok, _ := h.Blocks.Local().Has(block); ok && deleted == 0 {
			if err := h.Blocks.Local().Delete(block, true); err != nil {
				t.Fatal(err)
			}
			deleted++
		}
	}

	var phases []string
	opts := clean()
	opts.Progress = func(p CheckProgress) { phases = append(phases, p.Phase) }
	rep, err := fs.Check(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/d/gone: entry names inode", "/d/high: link count 3, but 1 entries", "/linked: link count 1, but 2 entries",
		"/d/big: block " + block.String() + " is on 2 of 3 replicas"}
	if len(rep.Problems) != len(want) {
		t.Fatalf("found %+v, want %d problems", rep.Problems, len(want))
	}
	for _, w := range want {
		path, what, _ := strings.Cut(w, ": ")
		if !slices.ContainsFunc(rep.Problems, func(p Problem) bool {
			return p.Path == path && strings.HasPrefix(p.What, what) && !p.Repaired
		}) {
			t.Errorf("no problem %q in %+v", w, rep.Problems)
		}
	}
	if len(phases) == 0 || phases[len(phases)-1] != "blocks" {
		t.Errorf("progress phases %v", phases)
	}

	opts = clean()
	opts.Repair = true
	rep, err = fs.Check(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Problems {
		if p.Repaired == (p.Path == "/d/high") {
			t.Errorf("repaired %v (only a count above the entries is left as it is): %+v", p.Repaired, p)
		}
	}
	if rep, err := fs.Check(ctx, clean()); err != nil || len(rep.Problems) != 1 || rep.Problems[0].Path != "/d/high" {
		t.Fatalf("check after repair: %+v, %v", rep.Problems, err)
	}
	if _, err := fs.Lookup(ctx, d, "gone"); err == nil {
		t.Error("the dangling entry is still there")
	}
}

// Page records no inode names (left by an interrupted removal or truncate)
// are reported, and a repair deletes them, never a page in use.
func TestCheckGarbagePages(t *testing.T) {
	hosts := memcluster.New(t, 3)
	fs := mustFS(t, hosts[0].Log, hosts[0].Blocks, Options{Chunk: testChunks, PageShift: testPageShift})
	ctx := ctxT(t)
	if err := fs.Init(ctx); err != nil {
		t.Fatal(err)
	}
	id := newFile(t, fs, "big")
	want := random(3<<20, 4)
	w := fs.NewWriter(id)
	w.WriteAt(want, 0)
	a, err := w.Flush(ctx)
	if err != nil || !a.Paged() {
		t.Fatalf("flush: paged %v, %v", a.Paged(), err)
	}
	stray := PageRecord(id.Num, 0, a.PageVer+5) // a version the inode never named
	orphan := PageRecord(id.Num+1, 0, 1)        // the page of an inode that is gone
	for _, name := range []string{stray, orphan} {
		if _, err := fs.write(ctx, id.Part, txlog.Change{Name: name, Value: EncodePage(nil)}); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := fs.Check(ctx, CheckOptions{Replicas: 3})
	if err != nil || len(rep.Problems) != 2 {
		t.Fatalf("check: %+v, %v", rep.Problems, err)
	}
	if rep, err = fs.Check(ctx, CheckOptions{Replicas: 3, Repair: true}); err != nil || len(rep.Problems) != 2 || !rep.Problems[0].Repaired || !rep.Problems[1].Repaired {
		t.Fatalf("repair: %+v, %v", rep.Problems, err)
	}
	if rep, err = fs.Check(ctx, CheckOptions{Replicas: 3}); err != nil || len(rep.Problems) != 0 {
		t.Fatalf("check after the repair: %+v, %v", rep.Problems, err)
	}
	if got := readAll(t, fs, id); !bytes.Equal(got, want) {
		t.Fatal("the file reads back different after the repair")
	}
}
