package blockstore

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/difuse/difuse/store"
	"github.com/zeebo/blake3"
)

// The space check refuses a write that would eat the reserve.
func TestLocalNoSpace(t *testing.T) {
	l, err := OpenLocal(t.TempDir(), func(n int64) error {
		if n > 1000 {
			return store.ErrNoSpace
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Put(randomBytes(2000, 1), true); !errors.Is(err, store.ErrNoSpace) {
		t.Errorf("Put past the reserve: %v, want ErrNoSpace", err)
	}
	if _, _, err := l.Put(randomBytes(500, 1), true); err != nil {
		t.Errorf("a small Put: %v", err)
	}
	if n, b := l.Count(); n != 1 || b != 500 {
		t.Errorf("Count = %d, %d", n, b)
	}
}

func TestLocal(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenLocal(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(100<<10, 1)
	h, added, err := l.Put(data, true)
	if err != nil || !added || h != Sum(data) {
		t.Fatalf("Put = %s, %v, %v", h, added, err)
	}
	if _, added, _ := l.Put(data, false); added {
		t.Error("the same block was stored twice")
	}
	got, err := l.Get(h)
	if err != nil || string(got) != string(data) {
		t.Fatalf("Get = %d bytes, %v", len(got), err)
	}
	if ok, err := l.Has(h); !ok || err != nil {
		t.Fatalf("Has = %v, %v", ok, err)
	}
	if n, b := l.Count(); n != 1 || b != int64(len(data)) {
		t.Errorf("Count = %d, %d", n, b)
	}
	if _, err := l.PutHashed(Sum([]byte("other")), data, false); !errors.Is(err, ErrCorrupt) {
		t.Errorf("PutHashed under the wrong hash: %v", err)
	}
	// A block damaged on disk is detected on read.
	bad := append([]byte{}, data...)
	bad[1000] ^= 1
	if err := os.WriteFile(l.Path(h), bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Get(h); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Get of a damaged block: %v, want ErrCorrupt", err)
	}
	v := &Verifier{buf: make([]byte, 4096), hasher: blake3.New()} // read in pieces
	if _, err := l.Verify(h, v); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Verify of a damaged block: %v, want ErrCorrupt", err)
	}
	if _, err := l.Verify(Sum([]byte("absent")), v); !errors.Is(err, ErrNotFound) {
		t.Errorf("Verify of an absent block: %v, want ErrNotFound", err)
	}
	// Putting it again replaces the damaged copy.
	if _, err := l.PutHashed(h, data, true); err != nil {
		t.Fatal(err)
	}
	if got, err := l.Get(h); err != nil || string(got) != string(data) {
		t.Fatalf("Get after the repair: %v", err)
	}
	if n, err := l.Verify(h, v); err != nil || n != int64(len(data)) {
		t.Fatalf("Verify after the repair: %d bytes, %v", n, err)
	}
	// Verifying keeps no block bytes: a few small allocations per block.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		l.Verify(h, v)
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / 10; per > 4<<10 {
		t.Errorf("Verify of a %d-byte block allocated %d bytes", len(data), per)
	}
	// A write the process did not finish is swept away on open; counts
	// survive a reopen; Delete removes.
	if err := os.WriteFile(filepath.Join(dir, h.String()[:2], tmpPrefix+"123"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	l2, err := OpenLocal(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, b := l2.Count(); n != 1 || b != int64(len(data)) {
		t.Fatalf("reopened: Count = %d, %d", n, b)
	}
	if err := l2.Delete(h, true); err != nil {
		t.Fatal(err)
	}
	if _, err := l2.Get(h); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete: %v", err)
	}
	if n, b := l2.Count(); n != 0 || b != 0 {
		t.Errorf("Count after Delete = %d, %d", n, b)
	}
}

func TestLocalConcurrentPuts(t *testing.T) {
	l, err := OpenLocal(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	blocks := [][]byte{randomBytes(1000, 1), randomBytes(2000, 2), randomBytes(3000, 3)}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for _, b := range blocks {
				if _, _, err := l.Put(b, false); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if n, b := l.Count(); n != 3 || b != 6000 {
		t.Errorf("Count = %d, %d", n, b)
	}
}
