package blockstore

import (
	"errors"
	"sync"
	"testing"

	"github.com/difuse/difuse/store"
)

func TestLocal(t *testing.T) {
	db := store.NewMem()
	l, err := OpenLocal(db)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(100<<10, 1)
	h, added, err := l.Put(data)
	if err != nil || !added || h != Sum(data) {
		t.Fatalf("Put = %s, %v, %v", h, added, err)
	}
	if _, added, _ := l.Put(data); added {
		t.Error("the same block was stored twice")
	}
	got, err := l.Get(h)
	if err != nil || string(got) != string(data) {
		t.Fatalf("Get = %d bytes, %v", len(got), err)
	}
	if ok, err := l.Has(h); !ok || err != nil {
		t.Fatalf("Has = %v, %v", ok, err)
	}
	if st := l.Stats(); st.Blocks != 1 || st.StoredBytes != int64(len(data)) || st.WrittenBytes != 2*int64(len(data)) || st.DedupRatio != 2 {
		t.Errorf("Stats = %+v", st)
	}
	if _, err := l.PutHashed(Sum([]byte("other")), data); !errors.Is(err, ErrCorrupt) {
		t.Errorf("PutHashed under the wrong hash: %v", err)
	}
	// A block damaged on disk is detected on read.
	bad := append([]byte{}, data...)
	bad[1000] ^= 1
	db.Update(func(w store.Writer) error { return w.Set(blockKey(h), bad) })
	if _, err := l.Get(h); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Get of a damaged block: %v, want ErrCorrupt", err)
	}
	// Counts survive a reopen; Delete removes.
	l2, err := OpenLocal(db)
	if err != nil || l2.Stats().Blocks != 1 || l2.Stats().StoredBytes != int64(len(data)) {
		t.Fatalf("reopened: %+v, %v", l2.Stats(), err)
	}
	if err := l2.Delete(h); err != nil {
		t.Fatal(err)
	}
	if _, err := l2.Get(h); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete: %v", err)
	}
	if st := l2.Stats(); st.Blocks != 0 || st.StoredBytes != 0 {
		t.Errorf("Stats after Delete = %+v", st)
	}
}

func TestLocalConcurrentPuts(t *testing.T) {
	l, err := OpenLocal(store.NewMem())
	if err != nil {
		t.Fatal(err)
	}
	blocks := [][]byte{randomBytes(1000, 1), randomBytes(2000, 2), randomBytes(3000, 3)}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for _, b := range blocks {
				if _, _, err := l.Put(b); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if st := l.Stats(); st.Blocks != 3 || st.StoredBytes != 6000 || st.WrittenBytes != 48000 {
		t.Errorf("Stats = %+v", st)
	}
}
