//go:build linux

package lazyfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const pageSize = 4096

// requireFUSE skips the test unless it can mount FUSE filesystems and abort
// their connections.
func requireFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
}

// mount mounts a lazy filesystem over backing on a new directory, and takes
// it down when the test ends.
func mount(t *testing.T, backing string) (*FS, string) {
	t.Helper()
	mnt := t.TempDir()
	fsys, err := Mount(backing, mnt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		err := fsys.Unmount()
		if err == nil || errors.Is(err, errClosed) {
			return
		}
		t.Errorf("unmount: %v", err)
		if err := fsys.Crash(); err != nil {
			t.Errorf("crash after a failed unmount: %v", err)
		}
	})
	return fsys, mnt
}

// crash crashes fsys.
func crash(t *testing.T, fsys *FS) {
	t.Helper()
	if err := fsys.Crash(); err != nil {
		t.Fatalf("crash: %v", err)
	}
}

// open opens path, and closes it when the test ends unless done before.
func open(t *testing.T, path string, flag int) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, flag, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func create(t *testing.T, path string) *os.File {
	t.Helper()
	return open(t, path, os.O_RDWR|os.O_CREATE|os.O_TRUNC)
}

func writeAt(t *testing.T, f *os.File, s string, off int64) {
	t.Helper()
	if _, err := f.WriteAt([]byte(s), off); err != nil {
		t.Fatal(err)
	}
}

func fsync(t *testing.T, f *os.File) {
	t.Helper()
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync: %v", err)
	}
}

func closeFile(t *testing.T, f *os.File) {
	t.Helper()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// writeFile creates path with content s, fsyncing it if sync is set.
func writeFile(t *testing.T, path, s string, sync bool) {
	t.Helper()
	f := create(t, path)
	writeAt(t, f, s, 0)
	if sync {
		fsync(t, f)
	}
	closeFile(t, f)
}

func wantContent(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s holds %s, want %s", path, abbrev(string(got)), abbrev(want))
	}
}

// abbrev quotes s, eliding the middle of a long s.
func abbrev(s string) string {
	if len(s) <= 40 {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%q...%q (%d bytes)", s[:16], s[len(s)-16:], len(s))
}

func wantSize(t *testing.T, path string, want int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != want {
		t.Errorf("%s has size %d, want %d", path, fi.Size(), want)
	}
}

func wantGone(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: got %v, want it gone", path, err)
	}
}

func zeros(n int) string { return string(make([]byte, n)) }

func TestCrashKeepsOnlySyncedData(t *testing.T) {
	requireFUSE(t)
	tests := []struct {
		name string
		run  func(t *testing.T, mnt string)
		want map[string]string // backing files and their contents after the crash
		gone []string
	}{{
		name: "plain write",
		run: func(t *testing.T, mnt string) {
			writeFile(t, filepath.Join(mnt, "synced"), "durable", true)
			writeFile(t, filepath.Join(mnt, "unsynced"), "volatile", false)
		},
		want: map[string]string{"synced": "durable", "unsynced": ""},
	}, {
		name: "overwrite in the middle",
		run: func(t *testing.T, mnt string) {
			for _, name := range []string{"synced", "unsynced"} {
				writeFile(t, filepath.Join(mnt, name), "0123456789", true)
				f := open(t, filepath.Join(mnt, name), os.O_RDWR)
				writeAt(t, f, "ab", 4)
				if name == "synced" {
					fsync(t, f)
				}
				closeFile(t, f)
				wantContent(t, filepath.Join(mnt, name), "0123ab6789")
			}
		},
		want: map[string]string{"synced": "0123ab6789", "unsynced": "0123456789"},
	}, {
		name: "write past the end",
		run: func(t *testing.T, mnt string) {
			for _, name := range []string{"synced", "unsynced"} {
				writeFile(t, filepath.Join(mnt, name), "abc", true)
				f := open(t, filepath.Join(mnt, name), os.O_RDWR)
				writeAt(t, f, "Z", 2*pageSize+10)
				if name == "synced" {
					fsync(t, f)
				}
				closeFile(t, f)
				wantContent(t, filepath.Join(mnt, name), "abc"+zeros(2*pageSize+7)+"Z")
			}
		},
		want: map[string]string{"synced": "abc" + zeros(2*pageSize+7) + "Z", "unsynced": "abc"},
	}, {
		name: "truncate down with cached data",
		run: func(t *testing.T, mnt string) {
			for _, name := range []string{"synced", "unsynced"} {
				writeFile(t, filepath.Join(mnt, name), "0123456789", true)
				f := open(t, filepath.Join(mnt, name), os.O_RDWR)
				writeAt(t, f, "ABCDEFGHIJKLMNOPQRST", 0)
				if err := f.Truncate(5); err != nil {
					t.Fatal(err)
				}
				// Extending again must not bring the cut bytes back.
				if err := os.Truncate(filepath.Join(mnt, name), 10); err != nil {
					t.Fatal(err)
				}
				if name == "synced" {
					fsync(t, f)
				}
				closeFile(t, f)
				wantContent(t, filepath.Join(mnt, name), "ABCDE"+zeros(5))
			}
		},
		// Truncates are metadata: they reach the backing file at once.
		want: map[string]string{"synced": "ABCDE" + zeros(5), "unsynced": "01234" + zeros(5)},
	}, {
		name: "rename then sync under the new name",
		run: func(t *testing.T, mnt string) {
			for _, name := range []string{"synced", "unsynced"} {
				old := filepath.Join(mnt, name+".tmp")
				writeFile(t, old, "moved", false)
				if err := os.Rename(old, filepath.Join(mnt, name)); err != nil {
					t.Fatal(err)
				}
				if name == "synced" {
					// Syncing through a read-only handle persists data too.
					f := open(t, filepath.Join(mnt, name), os.O_RDONLY)
					fsync(t, f)
					closeFile(t, f)
				}
				wantContent(t, filepath.Join(mnt, name), "moved")
			}
		},
		want: map[string]string{"synced": "moved", "unsynced": ""},
		gone: []string{"synced.tmp", "unsynced.tmp"},
	}, {
		name: "O_SYNC write",
		run: func(t *testing.T, mnt string) {
			f := open(t, filepath.Join(mnt, "synced"), os.O_WRONLY|os.O_CREATE|os.O_SYNC)
			writeAt(t, f, "at once", 0)
			closeFile(t, f)
		},
		want: map[string]string{"synced": "at once"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			backing := t.TempDir()
			fsys, mnt := mount(t, backing)
			tt.run(t, mnt)
			crash(t, fsys)
			for name, want := range tt.want {
				wantContent(t, filepath.Join(backing, name), want)
			}
			for _, name := range tt.gone {
				wantGone(t, filepath.Join(backing, name))
			}

			_, mnt = mount(t, backing)
			for name, want := range tt.want {
				wantContent(t, filepath.Join(mnt, name), want)
			}
		})
	}
}

func TestReadsSeeCachedWrites(t *testing.T) {
	requireFUSE(t)
	backing := t.TempDir()
	_, mnt := mount(t, backing)
	path := filepath.Join(mnt, "f")
	want := "hello" + zeros(95) + "world"

	w := create(t, path)
	writeAt(t, w, "hello", 0)
	writeAt(t, w, "world", 100)

	r := open(t, path, os.O_RDONLY)
	got := make([]byte, 200)
	n, err := r.ReadAt(got, 0)
	if err != io.EOF || string(got[:n]) != want {
		t.Errorf("second handle read %q, %v; want %q, EOF", got[:n], err, want)
	}
	n, err = r.ReadAt(got[:4], 98)
	if err != nil || string(got[:n]) != "\x00\x00wo" {
		t.Errorf("read across the hole's end: %q, %v", got[:n], err)
	}
	fi, err := w.Stat()
	if err != nil || fi.Size() != int64(len(want)) {
		t.Errorf("fstat: size %v, %v; want %d", fi.Size(), err, len(want))
	}
	wantSize(t, path, int64(len(want)))
	wantSize(t, filepath.Join(backing, "f"), 0)

	closeFile(t, w)
	closeFile(t, r)
	wantSize(t, path, int64(len(want)))
	wantContent(t, path, want)

	link := filepath.Join(mnt, "link")
	if err := os.Link(path, link); err != nil {
		t.Fatal(err)
	}
	wantSize(t, link, int64(len(want)))
	wantContent(t, link, want)
	wantSize(t, filepath.Join(backing, "link"), 0)
}

func TestMmapMsync(t *testing.T) {
	requireFUSE(t)
	backing := t.TempDir()
	fsys, mnt := mount(t, backing)
	f := create(t, filepath.Join(mnt, "wal"))
	if err := f.Truncate(2 * pageSize); err != nil {
		t.Fatal(err)
	}
	// This process serves the mount it maps (see the package doc): fault
	// the pages in within mmap(2), and keep the garbage collector from
	// stopping the world while a thread might wait on the server.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	m, err := unix.Mmap(int(f.Fd()), 0, 2*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(m) })
	closeFile(t, f)

	copy(m, "AAAA")
	copy(m[pageSize:], "AAAA")
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		t.Fatalf("msync: %v", err)
	}
	copy(m[2:], "BBBB")
	copy(m[pageSize+100:], "BBBB")
	crash(t, fsys)

	want := make([]byte, 2*pageSize)
	copy(want, "AAAA")
	copy(want[pageSize:], "AAAA")
	_, mnt = mount(t, backing)
	wantContent(t, filepath.Join(mnt, "wal"), string(want))
}

func TestUnmountPersistsEverything(t *testing.T) {
	requireFUSE(t)
	backing := t.TempDir()
	fsys, mnt := mount(t, backing)

	writeFile(t, filepath.Join(mnt, "plain"), "plain", false)
	writeFile(t, filepath.Join(mnt, "sparse"), "abc", true)
	f := open(t, filepath.Join(mnt, "sparse"), os.O_RDWR)
	writeAt(t, f, "Z", pageSize+1)
	closeFile(t, f)
	writeFile(t, filepath.Join(mnt, "cut"), "0123456789", false)
	if err := os.Truncate(filepath.Join(mnt, "cut"), 4); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(mnt, "old"), "renamed", false)
	if err := os.Rename(filepath.Join(mnt, "old"), filepath.Join(mnt, "new")); err != nil {
		t.Fatal(err)
	}

	f = create(t, filepath.Join(mnt, "mapped"))
	if err := f.Truncate(pageSize); err != nil {
		t.Fatal(err)
	}
	func() {
		defer debug.SetGCPercent(debug.SetGCPercent(-1)) // see TestMmapMsync
		m, err := unix.Mmap(int(f.Fd()), 0, pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			t.Fatal(err)
		}
		copy(m[10:], "mapped")
		if err := unix.Munmap(m); err != nil {
			t.Fatal(err)
		}
	}()
	closeFile(t, f)

	if err := fsys.Unmount(); err != nil {
		t.Fatalf("unmount: %v", err)
	}
	wantContent(t, filepath.Join(backing, "plain"), "plain")
	wantContent(t, filepath.Join(backing, "sparse"), "abc"+zeros(pageSize-2)+"Z")
	wantContent(t, filepath.Join(backing, "cut"), "0123")
	wantContent(t, filepath.Join(backing, "new"), "renamed")
	wantGone(t, filepath.Join(backing, "old"))
	wantContent(t, filepath.Join(backing, "mapped"), zeros(10)+"mapped"+zeros(pageSize-16))
}

// TestUnlinkForgetsCachedBytes checks that the cached bytes of a file that
// has neither a name nor a handle left are forgotten, so that they cannot
// show through a new file that reuses the inode number.
func TestUnlinkForgetsCachedBytes(t *testing.T) {
	requireFUSE(t)
	fsys, mnt := mount(t, t.TempDir())

	writeFile(t, filepath.Join(mnt, "closed"), "unsynced", false)
	if err := os.Remove(filepath.Join(mnt, "closed")); err != nil {
		t.Fatal(err)
	}
	f := create(t, filepath.Join(mnt, "open"))
	writeAt(t, f, "unsynced", 0)
	if err := os.Remove(filepath.Join(mnt, "open")); err != nil {
		t.Fatal(err)
	}
	closeFile(t, f)
	writeFile(t, filepath.Join(mnt, "replaced"), "unsynced", false)
	writeFile(t, filepath.Join(mnt, "replacement"), "", false)
	if err := os.Rename(filepath.Join(mnt, "replacement"), filepath.Join(mnt, "replaced")); err != nil {
		t.Fatal(err)
	}

	// The kernel releases closed files asynchronously.
	for deadline := time.Now().Add(5 * time.Second); len(fsys.cache.all()) > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d files still cached", len(fsys.cache.all()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	writeFile(t, filepath.Join(mnt, "new"), "", false)
	wantContent(t, filepath.Join(mnt, "new"), "")
	wantContent(t, filepath.Join(mnt, "replaced"), "")
}

// TestRandomOps runs random writes, truncates, hole punches and syncs on a
// file, checks every step's reads against a model, and checks what the
// backing file holds after a crash or a clean unmount.
func TestRandomOps(t *testing.T) {
	requireFUSE(t)
	for _, clean := range []bool{false, true} {
		name := "crash"
		if clean {
			name = "unmount"
		}
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			backing := t.TempDir()
			fsys, mnt := mount(t, backing)
			path := filepath.Join(mnt, "f")
			w := create(t, path)
			// O_DIRECT sends every read to the server.
			r := open(t, path, os.O_RDONLY|unix.O_DIRECT)
			var visible, durable []byte
			for i := range 300 {
				switch op := rng.IntN(10); {
				case op < 6:
					p := make([]byte, 1+rng.IntN(2*pageSize))
					for k := range p {
						p[k] = byte('a' + rng.IntN(26))
					}
					off := rng.IntN(4 * pageSize)
					writeAt(t, w, string(p), int64(off))
					visible = resize(visible, max(len(visible), off+len(p)))
					copy(visible[off:], p)
				case op < 7:
					size := rng.IntN(5 * pageSize)
					if err := w.Truncate(int64(size)); err != nil {
						t.Fatal(err)
					}
					visible, durable = resize(visible, size), resize(durable, size)
				case op < 8:
					off, n := rng.IntN(4*pageSize), 1+rng.IntN(2*pageSize)
					if err := unix.Fallocate(int(w.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(off), int64(n)); err != nil {
						t.Fatal(err)
					}
					clear(visible[min(off, len(visible)):min(off+n, len(visible))])
					clear(durable[min(off, len(durable)):min(off+n, len(durable))])
				default:
					fsync(t, w)
					durable = slices.Clone(visible)
				}
				got, err := io.ReadAll(io.NewSectionReader(r, 0, 1<<30))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, visible) {
					t.Fatalf("after op %d: read %d bytes, differing from the %d written", i, len(got), len(visible))
				}
			}
			closeFile(t, w)
			closeFile(t, r)
			want := durable
			if clean {
				want = visible
				if err := fsys.Unmount(); err != nil {
					t.Fatal(err)
				}
			} else {
				crash(t, fsys)
			}
			got, err := os.ReadFile(filepath.Join(backing, "f"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("backing file has %d bytes, differing from the %d expected", len(got), len(want))
			}
		})
	}
}

// resize returns b cut or zero-extended to n bytes.
func resize(b []byte, n int) []byte {
	if n <= len(b) {
		return b[:n:n]
	}
	return append(b, make([]byte, n-len(b))...)
}

// TestExtents checks the cache's byte ranges against a model, with random
// writes, truncates and zeroing.
func TestExtents(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var xs extents
	var model []byte  // the cached bytes, 0 where not cached
	var cached []bool // which bytes are cached
	for i := range 5000 {
		switch op := rng.IntN(10); {
		case op < 7:
			off, n := rng.IntN(300), 1+rng.IntN(40)
			p := make([]byte, n)
			for k := range p {
				p[k] = byte(1 + rng.IntN(255))
			}
			xs.write(int64(off), p)
			if off+n > len(model) {
				model = append(model, make([]byte, off+n-len(model))...)
				cached = append(cached, make([]bool, off+n-len(cached))...)
			}
			copy(model[off:], p)
			for k := off; k < off+n; k++ {
				cached[k] = true
			}
		case op < 8:
			size := rng.IntN(340)
			xs.truncate(int64(size))
			if size < len(model) {
				model, cached = model[:size], cached[:size]
			}
		default:
			off, end := rng.IntN(300), rng.IntN(340)
			xs.zero(int64(off), int64(end))
			for k := off; k < min(end, len(model)); k++ {
				model[k] = 0
			}
		}
		for k, x := range xs {
			if len(x.data) == 0 || k > 0 && xs[k-1].end() >= x.off {
				t.Fatalf("op %d: extents %d and %d are empty, unsorted, overlapping or adjacent", i, k-1, k)
			}
			for at := x.off; at < x.end(); at++ {
				if !cached[at] {
					t.Fatalf("op %d: byte %d is cached but was not written", i, at)
				}
			}
		}
		buf := bytes.Repeat([]byte{0xee}, 400)
		off := rng.IntN(50)
		xs.copyTo(buf[:350-off], int64(off))
		for k := range 350 - off {
			want := byte(0xee)
			if at := off + k; at < len(cached) && cached[at] {
				want = model[at]
			}
			if buf[k] != want {
				t.Fatalf("op %d: byte %d reads %#x, want %#x", i, off+k, buf[k], want)
			}
		}
	}
}
