package store_test

import (
	"errors"
	"testing"

	"github.com/difuse/difuse/store"
	"github.com/difuse/difuse/store/storetest"
)

func TestMemSuite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.KV { return store.NewMem() })
}

// Crash loses what was written since the last Sync, and only that.
func TestMemCrash(t *testing.T) {
	m := store.NewMem()
	put := func(k, v string) {
		if err := m.Update(func(w store.Writer) error { return w.Set([]byte(k), []byte(v)) }); err != nil {
			t.Fatal(err)
		}
	}
	put("a", "1")
	put("b", "1")
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	put("a", "2")
	put("c", "1")
	m.Update(func(w store.Writer) error { return w.Delete([]byte("b")) })
	m.Crash()
	for k, want := range map[string]string{"a": "1", "b": "1"} {
		if got, err := m.Get([]byte(k)); err != nil || string(got) != want {
			t.Errorf("%s after the crash: %q, %v; want %q", k, got, err, want)
		}
	}
	if _, err := m.Get([]byte("c")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("c, never synced, after the crash: %v", err)
	}
}
