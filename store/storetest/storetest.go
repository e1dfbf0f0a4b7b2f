// Package storetest is the contract every implementation of the local store
// must meet, written once and run against store.DB and store.Mem.
package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/difuse/difuse/store"
)

// KV is the store surface the suite exercises.
type KV interface {
	Get(key []byte) ([]byte, error)
	Update(fn func(w store.Writer) error) error
	Scan(prefix []byte, fn func(key, val []byte) error) error
	ScanFrom(prefix, from []byte, fn func(key, val []byte) error) error
	Size(key []byte) (int64, error)
	ScanSizes(prefix []byte, fn func(key []byte, size int64) error) error
	Sync() error
	Close() error
}

// Run runs the suite; open must return a new, empty store for each call.
func Run(t *testing.T, open func(t *testing.T) KV) {
	t.Run("GetMissing", func(t *testing.T) {
		kv := open(t)
		if _, err := kv.Get([]byte("nope")); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get missing: err = %v, want ErrNotFound", err)
		}
	})
	t.Run("SetGetDelete", func(t *testing.T) {
		kv := open(t)
		set(t, kv, "a", "1")
		set(t, kv, "empty", "")
		if got := get(t, kv, "a"); got != "1" {
			t.Fatalf("Get a = %q", got)
		}
		if got := get(t, kv, "empty"); got != "" {
			t.Fatalf("Get empty = %q", got)
		}
		if err := kv.Update(func(w store.Writer) error { return w.Delete([]byte("a")) }); err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Get([]byte("a")); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get deleted: err = %v", err)
		}
	})
	t.Run("Sizes", func(t *testing.T) {
		kv := open(t)
		set(t, kv, "s/a", "12345")
		set(t, kv, "s/b", "")
		set(t, kv, "t/c", "xy")
		set(t, kv, "t/big", string(make([]byte, 3<<20))) // a value Badger keeps in its value log
		if n, err := kv.Size([]byte("t/big")); err != nil || n < 3<<20-16 || n > 3<<20+16 {
			t.Fatalf("Size t/big = %d, %v", n, err)
		}
		if n, err := kv.Size([]byte("s/a")); err != nil || n != 5 {
			t.Fatalf("Size s/a = %d, %v", n, err)
		}
		if _, err := kv.Size([]byte("s/z")); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Size of a missing key: %v", err)
		}
		var got []string
		err := kv.ScanSizes([]byte("s/"), func(k []byte, n int64) error {
			got = append(got, fmt.Sprintf("%s=%d", k, n))
			return nil
		})
		if err != nil || fmt.Sprint(got) != "[s/a=5 s/b=0]" {
			t.Fatalf("ScanSizes = %v, %v", got, err)
		}
	})
	t.Run("GetReturnsCopy", func(t *testing.T) {
		kv := open(t)
		set(t, kv, "k", "value")
		v, _ := kv.Get([]byte("k"))
		v[0] = 'X'
		if got := get(t, kv, "k"); got != "value" {
			t.Fatalf("stored value changed through Get's slice: %q", got)
		}
	})
	t.Run("UpdateIsAtomic", func(t *testing.T) {
		kv := open(t)
		set(t, kv, "x", "old")
		boom := errors.New("boom")
		err := kv.Update(func(w store.Writer) error {
			if err := w.Set([]byte("x"), []byte("new")); err != nil {
				return err
			}
			if err := w.Set([]byte("y"), []byte("new")); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Update err = %v, want the callback's", err)
		}
		if got := get(t, kv, "x"); got != "old" {
			t.Fatalf("failed update changed x to %q", got)
		}
		if _, err := kv.Get([]byte("y")); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("failed update created y: %v", err)
		}
	})
	t.Run("ScanPrefixInOrder", func(t *testing.T) {
		kv := open(t)
		for _, k := range []string{"p/3", "p/1", "q/1", "p/2", "o/9"} {
			set(t, kv, k, "v"+k)
		}
		var got []string
		err := kv.Scan([]byte("p/"), func(k, v []byte) error {
			if want := "v" + string(k); string(v) != want {
				return fmt.Errorf("value of %s = %q", k, v)
			}
			got = append(got, string(k))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != "[p/1 p/2 p/3]" {
			t.Fatalf("Scan = %v", got)
		}
		for from, want := range map[string]string{"p/2": "[p/2 p/3]", "p/1\x00": "[p/2 p/3]", "a": "[p/1 p/2 p/3]", "p/4": "[]"} {
			got = nil
			err := kv.ScanFrom([]byte("p/"), []byte(from), func(k, v []byte) error {
				got = append(got, string(k))
				return nil
			})
			if err != nil || fmt.Sprint(got) != want {
				t.Fatalf("ScanFrom(p/, %q) = %v, %v; want %s", from, got, err, want)
			}
		}
		stop := errors.New("stop")
		n := 0
		err = kv.Scan(nil, func(k, v []byte) error { n++; return stop })
		if !errors.Is(err, stop) || n != 1 {
			t.Fatalf("Scan stop: err = %v after %d calls", err, n)
		}
	})
	t.Run("Concurrent", func(t *testing.T) {
		kv := open(t)
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Go(func() {
				for i := range 100 {
					k := fmt.Appendf(nil, "g%d/%03d", g, i)
					if err := kv.Update(func(w store.Writer) error { return w.Set(k, k) }); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if err := kv.Sync(); err != nil {
			t.Fatal(err)
		}
		n := 0
		err := kv.Scan([]byte("g"), func(k, v []byte) error {
			if !bytes.Equal(k, v) {
				return fmt.Errorf("%s = %s", k, v)
			}
			n++
			return nil
		})
		if err != nil || n != 400 {
			t.Fatalf("Scan: %d keys, err %v", n, err)
		}
	})
	t.Run("Closed", func(t *testing.T) {
		kv := open(t)
		if err := kv.Close(); err != nil {
			t.Fatal(err)
		}
		if err := kv.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := kv.Get([]byte("a")); !errors.Is(err, store.ErrClosed) {
			t.Fatalf("Get after Close: %v", err)
		}
		if err := kv.Update(func(w store.Writer) error { return w.Set([]byte("a"), nil) }); !errors.Is(err, store.ErrClosed) {
			t.Fatalf("Update after Close: %v", err)
		}
	})
}

func set(t *testing.T, kv KV, k, v string) {
	t.Helper()
	if err := kv.Update(func(w store.Writer) error { return w.Set([]byte(k), []byte(v)) }); err != nil {
		t.Fatalf("set %s: %v", k, err)
	}
}

func get(t *testing.T, kv KV, k string) string {
	t.Helper()
	v, err := kv.Get([]byte(k))
	if err != nil {
		t.Fatalf("get %s: %v", k, err)
	}
	return string(v)
}
