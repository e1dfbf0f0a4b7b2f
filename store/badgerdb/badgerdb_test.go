package badgerdb_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/difuse/difuse/store"
	"github.com/difuse/difuse/store/badgerdb"
	"github.com/difuse/difuse/store/storetest"
)

func openDB(t *testing.T, dir string) *badgerdb.DB {
	t.Helper()
	db, err := badgerdb.Open(badgerdb.Options{Dir: dir, MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestDBSuite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.KV { return openDB(t, t.TempDir()) })
}

func TestReopenKeepsData(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	for i := range 1000 {
		k := fmt.Appendf(nil, "k%04d", i)
		if err := db.Update(func(w store.Writer) error { return w.Set(k, k) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, dir)
	v, err := db.Get([]byte("k0999"))
	if err != nil || string(v) != "k0999" {
		t.Fatalf("after reopen: %q, %v", v, err)
	}
}

func TestMissingParent(t *testing.T) {
	_, err := badgerdb.Open(badgerdb.Options{Dir: filepath.Join(t.TempDir(), "no", "such")})
	if !errors.Is(err, store.ErrNoDir) {
		t.Fatalf("err = %v, want ErrNoDir", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := badgerdb.Open(badgerdb.Options{Dir: file}); !errors.Is(err, store.ErrNoDir) {
		t.Fatalf("dir is a file: err = %v, want ErrNoDir", err)
	}
}

func TestCreatesDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new")
	openDB(t, dir)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("data directory not created: %v", err)
	}
}

// A directory held by another process is refused with ErrLocked and the
// holder's pid; it opens again once that process is gone.
func TestLockedByAnotherProcess(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	db.Close()
	holder := exec.Command(os.Args[0], "-test.run=^TestHelperHoldStore$")
	holder.Env = append(os.Environ(), "DIFUSE_HOLD_STORE="+dir)
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	ready := make([]byte, 6)
	if _, err := io.ReadFull(out, ready); err != nil || string(ready) != "ready\n" {
		t.Fatalf("helper: %q, %v", ready, err)
	}
	_, err = badgerdb.Open(badgerdb.Options{Dir: dir, MinFreeBytes: -1})
	if !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", holder.Process.Pid)) {
		t.Fatalf("err = %v, want ErrLocked naming pid %d", err, holder.Process.Pid)
	}
	holder.Process.Kill()
	holder.Wait()
	openDB(t, dir)
}

// TestHelperHoldStore is run as a child process by TestLockedByAnotherProcess:
// it opens the store, says so, and waits to be killed.
func TestHelperHoldStore(t *testing.T) {
	dir := os.Getenv("DIFUSE_HOLD_STORE")
	if dir == "" {
		t.Skip("helper process only")
	}
	if _, err := badgerdb.Open(badgerdb.Options{Dir: dir, MinFreeBytes: -1}); err != nil {
		t.Fatal(err)
	}
	fmt.Print("ready\n")
	time.Sleep(time.Minute)
}

// Two opens in one process conflict too: the lock is per open directory.
func TestLockedTwice(t *testing.T) {
	dir := t.TempDir()
	openDB(t, dir)
	_, err := badgerdb.Open(badgerdb.Options{Dir: dir, MinFreeBytes: -1})
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second open: err = %v, want ErrLocked", err)
	}
}

// mountTmpfs mounts a small tmpfs for the test, or skips where that needs
// privileges the test does not have.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("cannot mount tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func TestFullAtOpen(t *testing.T) {
	dir := mountTmpfs(t, "4m")
	_, err := badgerdb.Open(badgerdb.Options{Dir: filepath.Join(dir, "data")})
	if !errors.Is(err, store.ErrNoSpace) {
		t.Fatalf("err = %v, want ErrNoSpace", err)
	}
}

// Filling the disk while running gives ErrNoSpace from Update or Sync, the
// writes acknowledged before are still readable, and nothing panics.
func TestFullWhileRunning(t *testing.T) {
	dir := mountTmpfs(t, "400m")
	db, err := badgerdb.Open(badgerdb.Options{Dir: filepath.Join(dir, "data")})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	val := make([]byte, 256<<10)
	rand.Read(val) // incompressible
	var acked int
	var lastErr error
	for i := range 2000 {
		k := fmt.Appendf(nil, "k%05d", i)
		copy(val, k)
		if lastErr = db.Update(func(w store.Writer) error { return w.Set(k, val) }); lastErr != nil {
			break
		}
		if lastErr = db.Sync(); lastErr != nil {
			break
		}
		acked = i + 1
	}
	if !errors.Is(lastErr, store.ErrNoSpace) {
		t.Fatalf("after %d writes: err = %v, want ErrNoSpace", acked, lastErr)
	}
	t.Logf("disk full after %d acknowledged writes: %v", acked, lastErr)
	for i := range acked {
		k := fmt.Appendf(nil, "k%05d", i)
		v, err := db.Get(k)
		if err != nil || string(v[:len(k)]) != string(k) {
			t.Fatalf("acknowledged key %s: %v", k, err)
		}
	}
}

func TestStatsCountWritesAtOnce(t *testing.T) {
	db := openDB(t, t.TempDir())
	val := make([]byte, 64<<10)
	for i := range 64 {
		rand.Read(val)
		if err := db.Update(func(w store.Writer) error { return w.Set(fmt.Appendf(nil, "k%03d", i), val) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	// 4 MiB written: all of it is in the memtables' log until a flush.
	if st := db.Stats(); st.LSMBytes+st.VlogBytes < 4<<20 || st.FreeBytes <= 0 {
		t.Fatalf("stats after writing 4 MiB: %+v", st)
	}
}
