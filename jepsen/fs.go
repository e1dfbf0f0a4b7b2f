package jepsen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// fsDirs are the directories the filesystem workload moves files between.
const fsDirs = 3

// fileState is where a file may be and what it may hold; dir -1 is
// absent.
type fileState struct {
	dir     int
	content string
}

var absent = fileState{dir: -1}

// fsFile is what the checker knows of one file: every state it may be in.
// Each file belongs to one client, which runs its operations one at a
// time, so its possible states follow from their outcomes alone.
//
// An operation whose outcome is unknown may take effect at any time after
// it was called, even after the client went on (a commit a new leader
// completes later): it stays pending in every world until that world
// applies it, which the world may do before any later operation, or never.
type fsFile struct {
	name   string
	worlds []world
	// pending are the unknown operations, each as the states it may leave
	// if it takes effect in a state (none: it cannot act there).
	pending []effect
	// ops describes the operations on the file (wall time, what, the
	// error), for the report of a violation.
	ops []string
}

// effect gives the states an operation may leave if it takes effect in
// state s; none if it cannot act on s.
type effect func(s fileState) []fileState

// world is one state the file may be in, with the pending operations
// (bit i: fsFile.pending[i]) that have not taken effect in it yet.
type world struct {
	s       fileState
	pending uint64
}

// maxPending bounds the unknown operations a file keeps pending; beyond
// it the oldest must have taken effect or never will.
const maxPending = 64

func newFile(name string) *fsFile {
	return &fsFile{name: name, worlds: []world{{s: absent}}}
}

// note records an operation on the file.
func (f *fsFile) note(what string, err error) {
	res := "ok"
	if err != nil {
		res = err.Error()
	}
	f.ops = append(f.ops, fmt.Sprintf("%s %s: %s", time.Now().UTC().Format("15:04:05.000"), what, res))
}

// history returns the file's last operations, for a report.
func (f *fsFile) history() string {
	return strings.Join(f.ops[max(0, len(f.ops)-20):], "; ")
}

// settle adds to the worlds every world reached by letting pending
// operations take effect, in any order.
func (f *fsFile) settle() {
	for i := 0; i < len(f.worlds); i++ {
		w := f.worlds[i]
		for b := range f.pending {
			bit := uint64(1) << b
			if w.pending&bit == 0 {
				continue
			}
			for _, n := range f.pending[b](w.s) {
				nw := world{n, w.pending &^ bit}
				if !slices.Contains(f.worlds, nw) {
					f.worlds = append(f.worlds, nw)
				}
			}
		}
	}
}

// possible returns the states the file may be in now.
func (f *fsFile) possible() []fileState {
	f.settle()
	var out []fileState
	for _, w := range f.worlds {
		if !slices.Contains(out, w.s) {
			out = append(out, w.s)
		}
	}
	return out
}

// apply moves the file's worlds through an operation with an outcome. A
// failed one had no effect; an unknown one becomes pending; one that
// succeeded took effect now, so the worlds where it cannot act are gone,
// unless it can act in none (the checker then reports what is left).
func (f *fsFile) apply(outcome int, e effect) {
	switch outcome {
	case outFailed:
		return
	case outUnknown:
		if len(f.pending) == maxPending {
			f.retire()
		}
		f.pending = append(f.pending, e)
		bit := uint64(1) << (len(f.pending) - 1)
		for i := range f.worlds {
			f.worlds[i].pending |= bit
		}
		return
	}
	f.settle()
	var out []world
	for _, w := range f.worlds {
		for _, n := range e(w.s) {
			if nw := (world{n, w.pending}); !slices.Contains(out, nw) {
				out = append(out, nw)
			}
		}
	}
	if len(out) > 0 {
		f.worlds = out
	}
}

// retire ends the oldest pending operation's chance to take effect: the
// worlds keep both what it did and what it did not.
func (f *fsFile) retire() {
	f.settle()
	var out []world
	for _, w := range f.worlds {
		if nw := (world{w.s, w.pending >> 1}); !slices.Contains(out, nw) {
			out = append(out, nw)
		}
	}
	f.worlds, f.pending = out, f.pending[1:]
}

// fsClient runs file operations through one mount.
type fsClient struct {
	id      int
	root    string // the workload's directory in the mount
	rng     *rand.Rand
	files   []*fsFile
	n       int
	ops     *fsCounts
	written int
}

// fsCounts counts the filesystem operations and their outcomes.
type fsCounts struct {
	mu                   sync.Mutex
	ops, ok, failed, unk int
}

func (c *fsCounts) add(outcome int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ops++
	switch outcome {
	case outOK:
		c.ok++
	case outFailed:
		c.failed++
	default:
		c.unk++
	}
}

// outcomeOf classifies an error: ENOENT means the operation found nothing
// to act on (no effect); any other error may have left it done or not.
func outcomeOf(err error) int {
	switch {
	case err == nil:
		return outOK
	case errors.Is(err, syscall.ENOENT):
		return outFailed
	}
	return outUnknown
}

func (c *fsClient) path(dir int, name string) string {
	return filepath.Join(c.root, fmt.Sprint("d", dir), name)
}

// guess returns a directory the file may be in, for an operation to aim
// at, or -1 if it may be nowhere.
func (c *fsClient) guess(f *fsFile) int {
	var dirs []int
	for _, s := range f.possible() {
		if s.dir >= 0 {
			dirs = append(dirs, s.dir)
		}
	}
	if len(dirs) == 0 {
		return -1
	}
	return dirs[c.rng.IntN(len(dirs))]
}

// step runs one random operation: create, write, rename across
// directories, unlink or readdir.
func (c *fsClient) step(ctx context.Context) {
	c.written++
	content := fmt.Sprintf("client %d write %d\n", c.id, c.written)
	if len(c.files) == 0 || c.rng.IntN(4) == 0 {
		c.n++
		f := newFile(fmt.Sprintf("f%d-%d", c.id, c.n))
		c.files = append(c.files, f)
		dir := c.rng.IntN(fsDirs)
		err := os.WriteFile(c.path(dir, f.name), []byte(content), 0o644)
		f.note(fmt.Sprintf("create in d%d", dir), err)
		out := outcomeOf(err)
		if out == outFailed {
			out = outUnknown // the directory exists: ENOENT here is not "no effect"
		}
		f.apply(out, func(fileState) []fileState {
			if out == outUnknown {
				// A create that failed half way may leave the file empty.
				return []fileState{{dir, content}, {dir, ""}}
			}
			return []fileState{{dir, content}}
		})
		c.ops.add(out)
		return
	}
	f := c.files[c.rng.IntN(len(c.files))]
	dir := c.guess(f)
	if dir < 0 {
		return
	}
	switch c.rng.IntN(4) {
	case 0: // overwrite, without creating: the file may be elsewhere
		err := overwrite(c.path(dir, f.name), content)
		f.note(fmt.Sprintf("overwrite in d%d", dir), err)
		out := outcomeOf(err)
		f.apply(out, func(s fileState) []fileState {
			switch {
			case s.dir != dir:
				return nil
			case out == outUnknown:
				// Perhaps truncated, and the write not committed.
				return []fileState{{dir, content}, {dir, ""}}
			}
			return []fileState{{dir, content}}
		})
		c.ops.add(out)
	case 1: // rename across directories
		to := (dir + 1 + c.rng.IntN(fsDirs-1)) % fsDirs
		err := os.Rename(c.path(dir, f.name), c.path(to, f.name))
		f.note(fmt.Sprintf("rename d%d to d%d", dir, to), err)
		out := outcomeOf(err)
		f.apply(out, func(s fileState) []fileState {
			if s.dir != dir {
				return nil
			}
			return []fileState{{to, s.content}}
		})
		c.ops.add(out)
	case 2:
		// unlink(2) itself: os.Remove tries rmdir(2) after a failed unlink
		// and reports rmdir's error, so an unlink that took effect but
		// failed (EIO) would come back as ENOENT, "no effect".
		err := syscall.Unlink(c.path(dir, f.name))
		f.note(fmt.Sprintf("unlink in d%d", dir), err)
		out := outcomeOf(err)
		f.apply(out, func(s fileState) []fileState {
			if s.dir != dir {
				return nil
			}
			return []fileState{absent}
		})
		c.ops.add(out)
	default:
		_, err := os.ReadDir(filepath.Join(c.root, fmt.Sprint("d", dir)))
		c.ops.add(outcomeOf(err))
	}
}

// overwrite replaces an existing file's content.
func overwrite(path, content string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// readHealed reads file p, trying for up to 30 s as the final register
// reads do: what is checked is that the file is there, not how soon the
// healed cluster serves it.
func readHealed(p string) ([]byte, error) {
	var err error
	for range 30 {
		var b []byte
		if b, err = os.ReadFile(p); err == nil {
			return b, nil
		}
		time.Sleep(time.Second)
	}
	return nil, err
}

// checkFiles reads the workload's directories through a mount after the
// cluster healed and checks the filesystem's invariants: a file is in at
// most one directory; every listed entry opens; each file has one link;
// and where it is and what it holds is a state its operations allow.
func checkFiles(root string, files []*fsFile) []string {
	var bad []string
	seen := map[string][]fileState{}
	for d := range fsDirs {
		dir := filepath.Join(root, fmt.Sprint("d", d))
		entries, err := os.ReadDir(dir)
		if err != nil {
			return append(bad, fmt.Sprintf("readdir %s: %v", dir, err))
		}
		for _, e := range entries {
			p := filepath.Join(dir, e.Name())
			b, err := readHealed(p)
			if err != nil {
				bad = append(bad, fmt.Sprintf("%s is listed but does not open: %v", p, err))
				continue
			}
			var st syscall.Stat_t
			if err := syscall.Stat(p, &st); err != nil || st.Nlink != 1 {
				bad = append(bad, fmt.Sprintf("%s has %d links (%v), want 1", p, st.Nlink, err))
			}
			seen[e.Name()] = append(seen[e.Name()], fileState{d, string(b)})
		}
	}
	for _, f := range files {
		possible := f.possible()
		got := seen[f.name]
		delete(seen, f.name)
		switch {
		case len(got) > 1:
			bad = append(bad, fmt.Sprintf("%s is in %d directories: %v; operations: %s", f.name, len(got), got, f.history()))
		case len(got) == 0 && !slices.Contains(possible, absent):
			bad = append(bad, fmt.Sprintf("%s is gone; it may only be %v; operations: %s", f.name, possible, f.history()))
		case len(got) == 1 && !slices.Contains(possible, got[0]):
			bad = append(bad, fmt.Sprintf("%s is %+v; it may only be %v; operations: %s", f.name, got[0], possible, f.history()))
		}
	}
	for name := range seen {
		bad = append(bad, fmt.Sprintf("%s exists but was never created", name))
	}
	return bad
}
