package inode

import (
	"context"
	"strings"
	"testing"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/internal/memcluster"
	"github.com/difuse/difuse/txlog"
)

// holders counts block replicas through one host's block store.
type holders struct{ s *blockstore.Service }

func (h holders) BlockCheck(ctx context.Context, hashes []blockstore.Hash) (held, of []int, err error) {
	for _, x := range hashes {
		n, o, err := h.s.Holders(ctx, x)
		if err != nil {
			return nil, nil, err
		}
		held, of = append(held, n), append(of, o)
	}
	return held, of, nil
}

// Check finds an entry naming a missing inode, a wrong link count and a
// block missing from a replica; with Repair it fixes all three, and a
// second check finds nothing.
func TestCheck(t *testing.T) {
	hosts := memcluster.New(t, 3)
	fs := New(hosts[0].Log, hosts[0].Blocks, Options{Chunk: blockstore.ChunkOptions{Min: 16 << 10, Avg: 64 << 10, Max: 256 << 10}})
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
	if err != nil || len(a.Extents) < 2 {
		t.Fatalf("write: %d extents, %v", len(a.Extents), err)
	}
	linked := mkT(t, fs, Root, "linked", TypeFile)
	if _, err := fs.Link(ctx, linked, d, "linked2"); err != nil {
		t.Fatal(err)
	}
	gone := mkT(t, fs, d, "gone", TypeFile)
	mkT(t, fs, d, "fine", TypeSymlink)

	clean := func() CheckOptions { return CheckOptions{Replicas: 3, Blocks: holders{hosts[1].Blocks}} }
	if rep, err := fs.Check(ctx, clean()); err != nil || len(rep.Problems) != 0 || rep.Files != 3 || rep.Dirs != 2 || rep.Symlinks != 1 || rep.Blocks != int64(len(a.Extents)) {
		t.Fatalf("check of a sound filesystem: %+v, %v", rep, err)
	}

	// Damage: gone's inode deleted under its entry; linked's link count
	// wrong; a block of big deleted from one replica.
	if _, err := fs.write(ctx, gone.Part, txlog.Change{Name: InodeRecord(gone.Num), Delete: true}); err != nil {
		t.Fatal(err)
	}
	la, lh, err := fs.GetAttr(ctx, linked)
	if err != nil {
		t.Fatal(err)
	}
	la.Nlink = 5
	if _, err := fs.write(ctx, linked.Part, txlog.Change{Name: InodeRecord(linked.Num), Value: EncodeAttr(la), IfMatch: &lh}); err != nil {
		t.Fatal(err)
	}
	block := a.Extents[0].Block
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
	want := []string{"/d/gone: entry names inode", "/linked: link count 5, but 2 entries", "/d/big: block " + block.String() + " is on 2 of 3 replicas"}
	if len(rep.Problems) != len(want) {
		t.Fatalf("found %+v, want %d problems", rep.Problems, len(want))
	}
	for i, w := range want {
		path, what, _ := strings.Cut(w, ": ")
		if p := rep.Problems[i]; p.Path != path || !strings.HasPrefix(p.What, what) || p.Repaired {
			t.Errorf("problem %d: %+v, want %q", i, p, w)
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
		if !p.Repaired {
			t.Errorf("not repaired: %+v", p)
		}
	}
	if rep, err := fs.Check(ctx, clean()); err != nil || len(rep.Problems) != 0 {
		t.Fatalf("check after repair: %+v, %v", rep.Problems, err)
	}
	if _, err := fs.Lookup(ctx, d, "gone"); err == nil {
		t.Error("the dangling entry is still there")
	}
}
