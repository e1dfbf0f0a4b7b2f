package blockstore

import (
	"os"
	"testing"
	"time"

	"github.com/difuse/difuse/level"
)

// Sweep deletes only the blocks the keep set rejects and that were last
// used before the cutoff; a touch or a put of a held block counts as a use;
// a dry run deletes nothing.
func TestSweep(t *testing.T) {
	l, err := OpenLocal(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var hs []Hash
	for _, s := range []string{"garbage", "touched", "kept", "put again"} {
		h, _, err := l.Put([]byte(s), false)
		if err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-2 * time.Hour)
		if err := os.Chtimes(l.Path(h), old, old); err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	garbage, touched, kept, putAgain := hs[0], hs[1], hs[2], hs[3]
	if ok, err := l.Touch(touched); !ok || err != nil {
		t.Fatalf("touch: %v, %v", ok, err)
	}
	if _, _, err := l.Put([]byte("put again"), false); err != nil {
		t.Fatal(err)
	}
	if ok, err := l.Touch(Sum([]byte("absent"))); ok || err != nil {
		t.Fatalf("touch of an absent block: %v, %v", ok, err)
	}
	keep := func(h Hash) bool { return h == kept }
	cutoff := time.Now().Add(-time.Hour)
	st, err := l.Sweep(keep, cutoff, true, nil)
	if err != nil || st.Examined != 4 || st.Freed != 1 || st.FreedBytes != int64(len("garbage")) ||
		st.Recent != 2 || st.RecentBytes != int64(len("touchedput again")) {
		t.Fatalf("dry run: %+v, %v", st, err)
	}
	if ok, _ := l.Has(garbage); !ok {
		t.Fatal("a dry run deleted a block")
	}
	n := 0
	st, err = l.Sweep(keep, cutoff, false, func() error { n++; return nil })
	if err != nil || st.Freed != 1 || n != 4 {
		t.Fatalf("sweep: %+v, %d calls, %v", st, n, err)
	}
	for h, want := range map[Hash]bool{garbage: false, touched: true, kept: true, putAgain: true} {
		if ok, _ := l.Has(h); ok != want {
			t.Errorf("after the sweep %s held %v, want %v", h, ok, want)
		}
	}
	if blocks, bytes := l.Count(); blocks != 3 || bytes != int64(len("touchedkeptput again")) {
		t.Errorf("count after the sweep: %d blocks, %d bytes", blocks, bytes)
	}
}

// Writing a block that its replicas already hold marks it used on each
// (so a collector's grace time covers the write that is about to refer to
// it); reading it does not.
func TestSetTouchesHeldBlocks(t *testing.T) {
	hosts, _ := newCluster(t, 3)
	data := []byte("a block written twice")
	h, err := hosts[0].svc.Set(ctxFor(t), data, level.All)
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	replicas := replicaHosts(t, hosts, h)
	for _, r := range replicas {
		if err := os.Chtimes(r.svc.Local().Path(h), old, old); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := hosts[1].svc.Get(ctxFor(t), h, level.All); err != nil {
		t.Fatal(err)
	}
	mtime := func(r *testHost) time.Time {
		info, err := os.Stat(r.svc.Local().Path(h))
		if err != nil {
			t.Fatal(err)
		}
		return info.ModTime()
	}
	for _, r := range replicas {
		if !mtime(r).Equal(old) {
			t.Errorf("a read marked the block used on %s", r.addr)
		}
	}
	if _, err := hosts[2].svc.Set(ctxFor(t), data, level.All); err != nil {
		t.Fatal(err)
	}
	for _, r := range replicas {
		if time.Since(mtime(r)) > time.Minute {
			t.Errorf("writing the block again did not mark it used on %s", r.addr)
		}
	}
}

// A store given a clock notes puts, touches and re-puts by it.
func TestSetClock(t *testing.T) {
	l, err := OpenLocal(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	l.SetClock(func() time.Time { return now })
	data := []byte("a block of a skewed host")
	h, _, err := l.Put(data, true)
	if err != nil {
		t.Fatal(err)
	}
	use := func(op string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		info, err := os.Stat(l.Path(h))
		if err != nil {
			t.Fatal(err)
		}
		if !info.ModTime().Equal(now) {
			t.Fatalf("after the %s the block was last used at %v, want %v", op, info.ModTime(), now)
		}
	}
	use("put", nil)
	now = now.Add(time.Minute)
	_, err = l.Touch(h)
	use("touch", err)
	now = now.Add(time.Minute)
	_, _, err = l.Put(data, false)
	use("second put", err)
}
