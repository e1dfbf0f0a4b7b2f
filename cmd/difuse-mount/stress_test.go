package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The stress workload: workers each own a directory tree and run random
// operations on it (creates, writes at random offsets, truncates down and
// up, copy_file_range into sparse files, renames, hard links, removals,
// fsyncs), keeping a model of what every name holds; at the end every
// file is checked against the model. Any error is a failure: the
// operations are chosen so that each should succeed.

// extentModel is a file's content as the model keeps it: its size and its
// non-zero bytes, in runs.
type fileModel struct {
	size int64
	data map[int64][]byte // runs of written bytes by offset, not overlapping
}

// write lays p over the model at off.
func (m *fileModel) write(p []byte, off int64) {
	m.punch(off, off+int64(len(p)))
	m.data[off] = slices.Clone(p)
	m.size = max(m.size, off+int64(len(p)))
}

// punch clears [lo, hi): runs are cut around it.
func (m *fileModel) punch(lo, hi int64) {
	for off, run := range m.data {
		end := off + int64(len(run))
		if end <= lo || off >= hi {
			continue
		}
		delete(m.data, off)
		if off < lo {
			m.data[off] = run[:lo-off]
		}
		if end > hi {
			m.data[hi] = run[hi-off:]
		}
	}
}

// truncate sets the size; bytes past it go.
func (m *fileModel) truncate(size int64) {
	m.punch(size, 1<<62)
	m.size = size
}

// read returns the model's bytes of [lo, hi).
func (m *fileModel) read(lo, hi int64) []byte {
	out := make([]byte, hi-lo)
	for off, run := range m.data {
		end := off + int64(len(run))
		if end <= lo || off >= hi {
			continue
		}
		a, b := max(off, lo), min(end, hi)
		copy(out[a-lo:b-lo], run[a-off:b-off])
	}
	return out
}

// worker runs the workload in its own directory.
type worker struct {
	root  string
	rng   *rand.Rand
	files map[string]*fileModel // by name relative to root; hard links share
	dirs  []string
	ops   map[string]int
}

const (
	stressMaxOff  = 1 << 30 // copies land up to 1 GiB into a file
	stressMaxData = 256 << 10
)

func (w *worker) path(name string) string { return filepath.Join(w.root, name) }

// someFile returns a random file name, "" if none.
func (w *worker) someFile() string {
	if len(w.files) == 0 {
		return ""
	}
	names := slices.Sorted(maps.Keys(w.files))
	return names[w.rng.IntN(len(names))]
}

func (w *worker) newName() string {
	return filepath.Join(w.dirs[w.rng.IntN(len(w.dirs))], fmt.Sprintf("f%d", w.rng.IntN(1<<20)))
}

func (w *worker) data(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(w.rng.Uint32() | 1) // never zero, so holes stay distinct
	}
	return p
}

// step runs one random operation.
func (w *worker) step() error {
	name := w.someFile()
	op := w.rng.IntN(12)
	if name == "" || len(w.files) < 4 && op > 3 {
		op = 0
	}
	switch op {
	case 0: // create, with some data
		n := w.newName()
		if _, ok := w.files[n]; ok {
			return nil
		}
		p := w.data(w.rng.IntN(64 << 10))
		if err := os.WriteFile(w.path(n), p, 0o644); err != nil {
			return err
		}
		m := &fileModel{data: map[int64][]byte{}}
		m.write(p, 0)
		w.files[n] = m
		w.ops["create"]++
	case 1, 2, 3: // a write at a random offset, near the data or far
		m := w.files[name]
		off := w.rng.Int64N(m.size + 1<<20)
		if w.rng.IntN(4) == 0 {
			off = w.rng.Int64N(stressMaxOff)
		}
		p := w.data(1 + w.rng.IntN(stressMaxData))
		f, err := os.OpenFile(w.path(name), os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		if _, err := f.WriteAt(p, off); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		m.write(p, off)
		w.ops["write"]++
	case 4: // truncate, down or up
		m := w.files[name]
		size := w.rng.Int64N(m.size + 1)
		if w.rng.IntN(2) == 0 {
			size = m.size + w.rng.Int64N(stressMaxOff/4)
		}
		if err := os.Truncate(w.path(name), size); err != nil {
			return err
		}
		m.truncate(size)
		w.ops["truncate"]++
	case 5: // copy_file_range from a file into another, far into it
		src, dst := w.files[name], w.someFile()
		if dst == name || src.size == 0 {
			return nil
		}
		off := w.rng.Int64N(src.size)
		n := min(src.size-off, 1+w.rng.Int64N(4<<20))
		to := w.rng.Int64N(stressMaxOff)
		in, err := os.Open(w.path(name))
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(w.path(dst), os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer out.Close()
		for done := int64(0); done < n; {
			roff, woff := off+done, to+done
			c, err := unix.CopyFileRange(int(in.Fd()), &roff, int(out.Fd()), &woff, int(n-done), 0)
			if err != nil {
				return fmt.Errorf("copy_file_range: %w", err)
			}
			if c == 0 {
				return fmt.Errorf("copy_file_range: copied nothing at %d of %d", done, n)
			}
			done += int64(c)
		}
		if err := out.Close(); err != nil {
			return err
		}
		w.files[dst].write(src.read(off, off+n), to)
		w.ops["copy"]++
	case 6, 7: // rename, over a file or to a new name
		to := w.someFile()
		if w.rng.IntN(2) == 0 {
			to = w.newName()
		}
		if to == name || w.files[to] == w.files[name] {
			return nil // two names of one file: POSIX leaves both
		}
		if err := os.Rename(w.path(name), w.path(to)); err != nil {
			return err
		}
		w.files[to] = w.files[name]
		delete(w.files, name)
		w.ops["rename"]++
	case 8: // a hard link
		to := w.newName()
		if _, ok := w.files[to]; ok {
			return nil
		}
		if err := os.Link(w.path(name), w.path(to)); err != nil {
			return err
		}
		w.files[to] = w.files[name]
		w.ops["link"]++
	case 9, 10: // remove
		if err := os.Remove(w.path(name)); err != nil {
			return err
		}
		delete(w.files, name)
		w.ops["remove"]++
	case 11: // fsync
		f, err := os.OpenFile(w.path(name), os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := f.Sync(); err != nil {
			return err
		}
		w.ops["fsync"]++
	}
	return nil
}

// check compares every file with its model: its size, the bytes the model
// holds, and the bytes the file says it holds data at (SEEK_DATA), which
// must be the model's or zeros.
func (w *worker) check() error {
	for name, m := range w.files {
		f, err := os.Open(w.path(name))
		if err != nil {
			return err
		}
		err = checkFile(f, m)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

func checkFile(f *os.File, m *fileModel) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != m.size {
		return fmt.Errorf("size %d, want %d", fi.Size(), m.size)
	}
	compare := func(lo, hi int64) error {
		for lo < hi {
			n := min(hi-lo, 8<<20)
			got := make([]byte, n)
			if _, err := f.ReadAt(got, lo); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if !bytes.Equal(got, m.read(lo, lo+n)) {
				return fmt.Errorf("bytes at %d..%d differ from the model", lo, lo+n)
			}
			lo += n
		}
		return nil
	}
	for off, run := range m.data {
		if err := compare(off, off+int64(len(run))); err != nil {
			return err
		}
	}
	fd := int(f.Fd())
	for off := int64(0); off < m.size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return fmt.Errorf("SEEK_DATA at %d: %w", off, err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("SEEK_HOLE at %d: %w", data, err)
		}
		if err := compare(data, hole); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// stress runs workers × ops random operations under dir, seeded, then
// checks every file, and returns how long the operations took.
func stress(t *testing.T, dir string, workers, ops int, seed uint64) time.Duration {
	t.Helper()
	ws := make([]*worker, workers)
	for i := range ws {
		w := &worker{root: filepath.Join(dir, fmt.Sprint("w", i)), rng: rand.New(rand.NewPCG(seed, uint64(i))), files: map[string]*fileModel{}, ops: map[string]int{}}
		w.dirs = []string{"a", "b", "a/c"}
		for _, d := range w.dirs {
			if err := os.MkdirAll(w.path(d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		ws[i] = w
	}
	start := time.Now()
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Go(func() {
			for k := range ops {
				if err := w.step(); err != nil {
					errs[i] = fmt.Errorf("worker %d, operation %d: %w", i, k, err)
					return
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for i, w := range ws {
		if err := w.check(); err != nil {
			t.Fatalf("worker %d: %v", i, err)
		}
	}
	t.Logf("%d workers × %d operations in %v: %v", workers, ops, took.Round(time.Millisecond), ws[0].ops)
	return took
}

// The stress workload (4 workers × 2,000 operations) runs on the local
// disk and on the mount of a 3-node cluster: no error, and every file as
// the model says. The mount may take up to 10 times the local disk's time,
// or a minute, whichever is more: past that it is far off its mark (the
// test reports both times either way).
func TestStress(t *testing.T) {
	ops := 2000
	if testing.Short() {
		ops = 300
	}
	local := stress(t, t.TempDir(), 4, ops, 1)
	c := startCluster(t)
	mnt := t.TempDir()
	p := c.mount(t, 0, mnt)
	took := stress(t, mnt, 4, ops, 1)
	bound := max(10*local, time.Minute)
	t.Logf("local disk %v, the mount %v (%.1f×)", local.Round(time.Millisecond), took.Round(time.Millisecond), float64(took)/float64(local))
	if took > bound {
		t.Errorf("the mount took %v, over %v", took, bound)
	}
	unmount(t, p, mnt)
}
