package badgerdb_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/difuse/difuse/internal/lazyfs"
	"github.com/difuse/difuse/store"
	"github.com/difuse/difuse/store/badgerdb"
)

// Every write Update and Sync returned from survives a power cut: the
// store's directory sits on a lazy filesystem that keeps what was never
// synced in memory; a child process writes from several goroutines, small
// values (in the memtables' write-ahead logs, which rotate) and large ones
// (in the value log), and prints each key once Update and Sync returned;
// it is killed, the filesystem loses what was not synced, and another
// child finds every printed key. (Badger's own Sync, which the store used
// to call, syncs only the active memtable's log and the newest value log
// file; the writes it left unsynced are lost only if the power goes
// before Badger flushes them, a window too narrow for this test to hit.)
func TestPowerLossKeepsAcknowledgedWrites(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the lazy filesystem mounts FUSE, which needs root here")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	backing, mnt := t.TempDir(), t.TempDir()
	fs, err := lazyfs.Mount(backing, mnt)
	if err != nil {
		t.Fatal(err)
	}
	mounted := true
	t.Cleanup(func() {
		if mounted {
			fs.Crash()
		}
	})
	writer := exec.Command(os.Args[0], "-test.run=^TestHelperPowerLoss$")
	writer.Env = append(os.Environ(), "DIFUSE_POWERLOSS=write", "DIFUSE_POWERLOSS_DIR="+filepath.Join(mnt, "db"))
	out, err := writer.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	writer.Stderr = os.Stderr
	if err := writer.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { writer.Process.Kill(); writer.Wait() })
	const acks = 1500
	var acked []string
	lines := bufio.NewScanner(out)
	for len(acked) < acks && lines.Scan() {
		if k, ok := strings.CutPrefix(lines.Text(), "acked "); ok {
			acked = append(acked, k)
		}
	}
	if len(acked) < acks {
		t.Fatalf("the writer stopped after %d acknowledged writes: %v", len(acked), lines.Err())
	}
	writer.Process.Kill()
	writer.Wait()
	if err := fs.Crash(); err != nil {
		t.Fatal(err)
	}
	mounted = false
	if fs, err = lazyfs.Mount(backing, mnt); err != nil {
		t.Fatal(err)
	}
	mounted = true
	list := filepath.Join(t.TempDir(), "acked")
	if err := os.WriteFile(list, []byte(strings.Join(acked, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	check := exec.Command(os.Args[0], "-test.run=^TestHelperPowerLoss$")
	check.Env = append(os.Environ(), "DIFUSE_POWERLOSS=check", "DIFUSE_POWERLOSS_DIR="+filepath.Join(mnt, "db"), "DIFUSE_POWERLOSS_KEYS="+list)
	if got, err := check.CombinedOutput(); err != nil {
		t.Fatalf("after the power cut: %v\n%s", err, got)
	}
	if err := fs.Unmount(); err != nil {
		t.Fatal(err)
	}
	mounted = false
}

// TestHelperPowerLoss is the child of TestPowerLossKeepsAcknowledgedWrites:
// it writes and prints, or checks.
func TestHelperPowerLoss(t *testing.T) {
	dir := os.Getenv("DIFUSE_POWERLOSS_DIR")
	switch os.Getenv("DIFUSE_POWERLOSS") {
	case "write":
		db, err := badgerdb.Open(badgerdb.Options{Dir: dir, MinFreeBytes: -1, MemTableBytes: 1 << 20, GCInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		small, large := make([]byte, 2000), make([]byte, 160<<10) // past the 128 KiB a 1 MiB memtable keeps inline
		for g := range 4 {
			wg.Go(func() {
				for i := 0; ; i++ {
					k, value := fmt.Sprintf("k%d-%d", g, i), small
					if i%2 == 1 {
						value = large
					}
					if err := db.Update(func(w store.Writer) error { return w.Set([]byte(k), value) }); err != nil {
						panic(err)
					}
					if err := db.Sync(); err != nil {
						panic(err)
					}
					mu.Lock()
					fmt.Printf("acked %s\n", k)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	case "check":
		db, err := badgerdb.Open(badgerdb.Options{Dir: dir, MinFreeBytes: -1, GCInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		keys, err := os.ReadFile(os.Getenv("DIFUSE_POWERLOSS_KEYS"))
		if err != nil {
			t.Fatal(err)
		}
		lost := 0
		for _, k := range strings.Split(string(keys), "\n") {
			if _, err := db.Get([]byte(k)); err != nil {
				lost++
			}
		}
		if lost > 0 {
			t.Fatalf("%d of %d acknowledged writes lost", lost, len(strings.Split(string(keys), "\n")))
		}
	default:
		t.Skip("helper process only")
	}
}
