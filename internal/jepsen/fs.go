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

// fsDirs are the workload's directories, d0 to d2, between which objects
// move and link.
const fsDirs = 3

// The content of a directory's entry: a live directory, empty or holding
// the use probe's file; or a dead one, which rmdir (or a rename onto it)
// marked as it began and did not finish: listed, but taking no entries.
const (
	dirMark   = "/"
	probeMark = "/p"
	deadMark  = "/dead"
)

// probeName is the file the use probe makes in a directory.
const probeName = "p"

// entry is an object's name in one workload directory: ino 0 is none.
// A file's names with the same ino are hard links of one inode, and each
// holds the inode's content; a directory's content is one of the marks.
type entry struct {
	ino     int
	content string
}

// fsState is an object's names, one slot per workload directory, all
// with the object's base name.
type fsState [fsDirs]entry

func (s fsState) has(d int) bool { return s[d].ino != 0 }

// write gives inode ino's names content c.
func (s fsState) write(ino int, c string) fsState {
	for d := range s {
		if s[d].ino == ino {
			s[d].content = c
		}
	}
	return s
}

func (s fsState) String() string {
	var b strings.Builder
	for d, e := range s {
		fmt.Fprintf(&b, " d%d=", d)
		switch {
		case e.ino == 0:
			b.WriteString("-")
		case e.content == dirMark:
			b.WriteString("dir")
		case e.content == probeMark:
			b.WriteString("dir+" + probeName)
		case e.content == deadMark:
			b.WriteString("dead-dir")
		default:
			fmt.Fprintf(&b, "#%d%q", e.ino, e.content)
		}
	}
	return "{" + b.String()[1:] + "}"
}

// effect gives the states an operation may leave if it takes effect in
// state s; none if it cannot act on s.
type effect func(s fsState) []fsState

// world is one state the object may be in, with the pending operations
// (bit i: fsObject.pending[i]) that have not taken effect in it yet.
type world struct {
	s       fsState
	pending uint64
}

// fsObject is what the checker knows of one file or directory: every
// state it may be in. Each object belongs to one client, which runs its
// operations one at a time, so its possible states follow from their
// outcomes alone.
//
// An operation whose outcome is unknown may take effect at any time after
// it was called, even after the client went on (a commit a new leader
// completes later): it stays pending in every world until that world
// applies it, which the world may do before any later operation, or never.
type fsObject struct {
	name    string
	dir     bool
	worlds  []world
	pending []effect
	settled bool // the worlds hold every world pending operations lead to
	inos    int  // inode numbers given out
	// unsure says that an operation on it had an unknown outcome, which
	// may leave an inode's link count too high (never too low).
	unsure bool
	// ruledOut holds the states that observations and operations lately
	// showed it was no longer in, which a stale cache may still show.
	ruledOut []ruling
	// violation is the first violation found; the object is no longer
	// used or checked after it.
	violation string
	// ops describes the operations on the object (wall time, what, the
	// outcome), for the report of a violation.
	ops []string
}

type ruling struct {
	at     time.Time
	states []fsState
}

// staleFor is how long the mount's caches may show a state that is gone:
// the kernel's and difuse-mount's attribute and name timeouts (1 s) with
// a margin. They show it only when a change came from an operation whose
// outcome was unknown, which took effect after it failed.
const staleFor = 2 * time.Second

// maxPending bounds the unknown operations an object keeps pending, and
// maxWorlds the worlds they make; beyond them the oldest must have taken
// effect or never will.
const (
	maxPending = 16
	maxWorlds  = 4096
)

func newObject(name string, dir bool) *fsObject {
	return &fsObject{name: name, dir: dir, worlds: []world{{}}, settled: true}
}

// newIno returns an inode number no state of the object uses yet.
func (o *fsObject) newIno() int {
	o.inos++
	return o.inos
}

// note records an operation on the object.
func (o *fsObject) note(what string, err error) {
	o.ops = append(o.ops, fmt.Sprintf("%s %s: %s", time.Now().UTC().Format("15:04:05.000"), what, errText(err)))
}

// errText describes an error by its errno if it has one: the operation
// and its paths are already told.
func errText(err error) string {
	var errno syscall.Errno
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &errno):
		return errno.Error()
	}
	return err.Error()
}

// history returns the object's last operations, for a report.
func (o *fsObject) history() string {
	return strings.Join(o.ops[max(0, len(o.ops)-20):], "; ")
}

// settle adds to the worlds every world reached by letting pending
// operations take effect, in any order.
func (o *fsObject) settle() {
	if o.settled {
		return
	}
	seen := make(map[world]bool, len(o.worlds))
	for _, w := range o.worlds {
		seen[w] = true
	}
	for i := 0; i < len(o.worlds); i++ {
		w := o.worlds[i]
		for b, e := range o.pending {
			bit := uint64(1) << b
			if w.pending&bit == 0 {
				continue
			}
			for _, n := range e(w.s) {
				if nw := (world{n, w.pending &^ bit}); !seen[nw] {
					seen[nw] = true
					o.worlds = append(o.worlds, nw)
				}
			}
		}
	}
	o.settled = true
}

// possible returns the states the object may be in now.
func (o *fsObject) possible() []fsState {
	o.settle()
	var out []fsState
	for _, w := range o.worlds {
		if !slices.Contains(out, w.s) {
			out = append(out, w.s)
		}
	}
	return out
}

// unknown makes operations of unknown outcome pending, in every world.
func (o *fsObject) unknown(es ...effect) {
	o.unsure = true
	for _, e := range es {
		if len(o.pending) == maxPending {
			o.retire()
		}
		o.pending = append(o.pending, e)
		bit := uint64(1) << (len(o.pending) - 1)
		for i := range o.worlds {
			o.worlds[i].pending |= bit
		}
		o.settled = false
	}
	o.settle()
	for len(o.worlds) > maxWorlds && len(o.pending) > 0 {
		o.retire()
	}
}

// retire ends the oldest pending operation's chance to take effect: the
// worlds keep both what it did and what it did not.
func (o *fsObject) retire() {
	o.settle()
	seen := map[world]bool{}
	var out []world
	for _, w := range o.worlds {
		if nw := (world{w.s, w.pending >> 1}); !seen[nw] {
			seen[nw] = true
			out = append(out, nw)
		}
	}
	o.worlds, o.pending = out, o.pending[1:]
}

// done moves the worlds through an operation that succeeded: it took
// effect now, so the worlds where it cannot act are gone. If it can act
// in none, that is a violation.
func (o *fsObject) done(what string, e effect) {
	o.settle()
	seen := map[world]bool{}
	var out []world
	var gone []fsState
	for _, w := range o.worlds {
		ns := e(w.s)
		if len(ns) == 0 {
			gone = append(gone, w.s)
		}
		for _, n := range ns {
			if nw := (world{n, w.pending}); !seen[nw] {
				seen[nw] = true
				out = append(out, nw)
			}
		}
	}
	if len(out) == 0 {
		o.violate(what + " succeeded")
		return
	}
	o.ruleOut(gone)
	o.worlds, o.settled = out, false
}

// saw keeps the worlds whose state shows what an observation saw (t).
// If none does, and none did lately either (a stale cache), that is a
// violation.
func (o *fsObject) saw(what string, t test) {
	o.settle()
	var keep []world
	var gone []fsState
	for _, w := range o.worlds {
		if t(w.s) {
			keep = append(keep, w)
		} else {
			gone = append(gone, w.s)
		}
	}
	switch {
	case len(keep) > 0:
		o.ruleOut(gone)
		// Pending operations may take effect right after: settle again.
		o.worlds, o.settled = keep, len(gone) == 0
	case o.ruledOutLately(t):
		o.ops = append(o.ops, "(a stale cache's view)")
	default:
		o.violate(what)
	}
}

// ruleOut keeps states the object was just shown not to be in.
func (o *fsObject) ruleOut(states []fsState) {
	now := time.Now()
	o.ruledOut = slices.DeleteFunc(o.ruledOut, func(r ruling) bool { return now.Sub(r.at) > staleFor })
	if len(states) > 0 {
		o.ruledOut = append(o.ruledOut, ruling{now, states})
	}
}

// ruledOutLately reports whether a state that passes t was ruled out
// within staleFor.
func (o *fsObject) ruledOutLately(t test) bool {
	for _, r := range o.ruledOut {
		if time.Since(r.at) <= staleFor && slices.ContainsFunc(r.states, t) {
			return true
		}
	}
	return false
}

// violate records a violation: what happened, which no state the object
// may be in allows. The object is no longer checked.
func (o *fsObject) violate(what string) {
	o.violation = fmt.Sprintf("%s: %s, which no state it may be in allows (%v); its operations: %s",
		o.name, what, o.possible(), o.history())
}

// Effects of the operations. Files: create makes the name d of a new
// inode; write gives an inode content; rename, link, unlink as POSIX
// has them.

func create(d, ino int) effect {
	return func(s fsState) []fsState {
		if s.has(d) {
			return nil
		}
		s[d] = entry{ino, ""}
		return []fsState{s}
	}
}

// writeName gives the inode named d content c.
func writeName(d int, c string) effect {
	return func(s fsState) []fsState {
		if !s.has(d) {
			return nil
		}
		return []fsState{s.write(s[d].ino, c)}
	}
}

// writeInode gives one of inodes inos, whichever is there, one of the
// contents cs: the pending write of a file opened by a name that named
// one of them.
func writeInode(inos []int, cs ...string) effect {
	return func(s fsState) []fsState {
		var out []fsState
		for _, ino := range inos {
			if !slices.ContainsFunc(s[:], func(e entry) bool { return e.ino == ino }) {
				continue
			}
			for _, c := range cs {
				out = append(out, s.write(ino, c))
			}
		}
		return out
	}
}

// rename moves name d to d2, replacing a file there (a directory: only an
// empty one); two links of one inode are both left, as POSIX says.
func rename(d, d2 int) effect {
	return func(s fsState) []fsState {
		if !s.has(d) || s[d2].content == probeMark {
			return nil
		}
		if s[d2].ino != s[d].ino {
			s[d2], s[d] = s[d], entry{}
		}
		return []fsState{s}
	}
}

func link(d, d2 int) effect {
	return func(s fsState) []fsState {
		if !s.has(d) || s.has(d2) {
			return nil
		}
		s[d2] = s[d]
		return []fsState{s}
	}
}

func unlink(d int) effect {
	return func(s fsState) []fsState {
		if !s.has(d) {
			return nil
		}
		s[d] = entry{}
		return []fsState{s}
	}
}

// Directories: mkdir, rmdir (of an empty or dead one); bury marks an empty
// directory d dead, as rmdir and a rename from src onto it do first; the
// use probe puts its file in a live directory and takes it out.

func mkdir(d, ino int) effect {
	return func(s fsState) []fsState {
		if s.has(d) {
			return nil
		}
		s[d] = entry{ino, dirMark}
		return []fsState{s}
	}
}

func rmdir(d int) effect {
	return func(s fsState) []fsState {
		if s[d].content != dirMark && s[d].content != deadMark {
			return nil
		}
		s[d] = entry{}
		return []fsState{s}
	}
}

func bury(d, src int) effect {
	return func(s fsState) []fsState {
		if s[d].content != dirMark || src >= 0 && !s.has(src) {
			return nil
		}
		s[d].content = deadMark
		return []fsState{s}
	}
}

func putProbe(d int) effect {
	return func(s fsState) []fsState {
		if !live(d)(s) {
			return nil
		}
		s[d].content = probeMark
		return []fsState{s}
	}
}

func dropProbe(d int) effect {
	return func(s fsState) []fsState {
		if s[d].content != probeMark {
			return nil
		}
		s[d].content = dirMark
		return []fsState{s}
	}
}

// test tells whether a state shows what an observation saw.
type test func(fsState) bool

func present(d int) test { return func(s fsState) bool { return s.has(d) } }
func missing(d int) test { return not(present(d)) }
func holding(d int) test { return func(s fsState) bool { return s[d].content == probeMark } }
func holds(d int, c string) test {
	return func(s fsState) bool { return s.has(d) && s[d].content == c }
}
func not(t test) test { return func(s fsState) bool { return !t(s) } }

// live tells whether d is a live directory.
func live(d int) test {
	return func(s fsState) bool { return s[d].content == dirMark || s[d].content == probeMark }
}

// fsClient runs operations on its own files and directories through one
// mount.
type fsClient struct {
	id      int
	root    string // the workload's directory in the mount
	rng     *rand.Rand
	ops     *fsCounts
	objs    []*fsObject
	written int
}

// activeObjects is how many of its latest objects a client works on.
const activeObjects = 8

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

// setupFS makes the workload's directories under root.
func setupFS(root string) error {
	for d := range fsDirs {
		if err := os.MkdirAll(filepath.Join(root, fmt.Sprint("d", d)), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func (c *fsClient) path(d int, name string) string {
	return filepath.Join(c.root, fmt.Sprint("d", d), name)
}

// violations returns the history violations found so far.
func (c *fsClient) violations() []string {
	var out []string
	for _, o := range c.objs {
		if o.violation != "" {
			out = append(out, o.violation)
		}
	}
	return out
}

// active returns the objects the client works on.
func (c *fsClient) active() []*fsObject {
	return slices.DeleteFunc(slices.Clone(c.objs[max(0, len(c.objs)-activeObjects):]),
		func(o *fsObject) bool { return o.violation != "" })
}

// shows maps an error to what it says of the state: the name was not
// there (ENOENT), it was (EEXIST), a directory was not empty (ENOTEMPTY).
type shows map[syscall.Errno]test

// do applies an operation's result to o: with no error, effect e took
// place; an error in sh is an observation; any other leaves its outcome
// unknown, with pend (else e) pending.
func (c *fsClient) do(o *fsObject, what string, err error, e effect, sh shows, pend ...effect) {
	o.note(what, err)
	var errno syscall.Errno
	switch {
	case err == nil:
		c.ops.add(outOK)
		o.done(what, e)
	case errors.As(err, &errno) && sh[errno] != nil:
		c.ops.add(outFailed)
		o.saw(what+": "+errText(err), sh[errno])
	default:
		c.ops.add(outUnknown)
		if len(pend) == 0 {
			pend = []effect{e}
		}
		o.unknown(pend...)
	}
}

// step runs one random operation: a new file or directory, or an
// operation on one of the client's objects, chosen for a state it may be
// in.
func (c *fsClient) step(context.Context) {
	act := c.active()
	if len(act) == 0 || c.rng.IntN(8) == 0 {
		o := newObject(fmt.Sprintf("f%d-%d", c.id, len(c.objs)), false)
		if c.rng.IntN(4) == 0 {
			o = newObject(fmt.Sprintf("D%d-%d", c.id, len(c.objs)), true)
		}
		c.objs = append(c.objs, o)
		c.make(o, c.rng.IntN(fsDirs))
		return
	}
	o := act[c.rng.IntN(len(act))]
	ps := o.possible()
	s := ps[c.rng.IntN(len(ps))]
	var names, free []int
	for d := range fsDirs {
		if s.has(d) {
			names = append(names, d)
		} else {
			free = append(free, d)
		}
	}
	op := c.rng.IntN(8)
	switch {
	case op == 0:
		c.readdir(c.rng.IntN(fsDirs))
	case len(names) == 0 || op == 1 && len(free) > 0:
		c.make(o, free[c.rng.IntN(len(free))])
	case o.dir:
		c.dirStep(o, names[c.rng.IntN(len(names))], op)
	default:
		c.fileStep(o, s, names[c.rng.IntN(len(names))], free, op)
	}
}

// make makes object o's name in directory d.
func (c *fsClient) make(o *fsObject, d int) {
	if o.dir {
		c.mkdir(o, d)
	} else {
		c.create(o, d)
	}
}

// dirStep runs operation op (1 to 7) on directory o's name d.
func (c *fsClient) dirStep(o *fsObject, d, op int) {
	switch op {
	case 1, 2, 3:
		c.probe(o, d)
	case 4, 5:
		c.rename(o, d, (d+1+c.rng.IntN(fsDirs-1))%fsDirs)
	default:
		sh := shows{syscall.ENOENT: missing(d), syscall.ENOTEMPTY: holding(d)}
		c.do(o, fmt.Sprintf("rmdir d%d", d), syscall.Rmdir(c.path(d, o.name)), rmdir(d), sh, bury(d, -1), rmdir(d))
	}
}

// fileStep runs operation op (1 to 7) on file o's name d; o may be in
// state s, which has no names in dirs free.
func (c *fsClient) fileStep(o *fsObject, s fsState, d int, free []int, op int) {
	switch op {
	case 1, 2:
		c.overwrite(o, d)
	case 3:
		c.read(o, d)
	case 4: // onto a link of the same inode if there is one
		d2 := (d + 1 + c.rng.IntN(fsDirs-1)) % fsDirs
		for e := range fsDirs {
			if e != d && s[e].ino == s[d].ino {
				d2 = e
			}
		}
		c.rename(o, d, d2)
	case 5:
		if len(free) == 0 {
			c.read(o, d)
			return
		}
		d2 := free[c.rng.IntN(len(free))]
		err := os.Link(c.path(d, o.name), c.path(d2, o.name))
		c.do(o, fmt.Sprintf("link d%d d%d", d, d2), err, link(d, d2), shows{syscall.ENOENT: missing(d), syscall.EEXIST: present(d2)})
	case 6:
		// unlink(2) itself: os.Remove tries rmdir(2) after a failed unlink
		// and reports rmdir's error, so an unlink that took effect but
		// failed (EIO) would come back as ENOENT, "no effect".
		c.do(o, fmt.Sprintf("unlink d%d", d), syscall.Unlink(c.path(d, o.name)), unlink(d), shows{syscall.ENOENT: missing(d)})
	default:
		c.read(o, c.rng.IntN(fsDirs))
	}
}

// content returns a new content no write used before.
func (c *fsClient) content() string {
	c.written++
	return fmt.Sprintf("client %d write %d\n", c.id, c.written)
}

// create makes file o's name in directory d with O_EXCL, a new inode,
// writes it and syncs it, and half the time the directory too.
func (c *fsClient) create(o *fsObject, d int) {
	ino := o.newIno()
	f, err := os.OpenFile(c.path(d, o.name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	// ENOENT too is unknown: the directory exists.
	c.do(o, fmt.Sprintf("create d%d", d), err, create(d, ino), shows{syscall.EEXIST: present(d)})
	if err != nil {
		return
	}
	content := c.content()
	_, err = f.WriteString(content)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	c.do(o, fmt.Sprintf("write+fsync d%d %q", d, content), err, writeInode([]int{ino}, content), nil)
	if c.rng.IntN(2) == 0 {
		c.syncDir(o, d)
	}
}

// overwrite replaces the content of file o's name d, and half the time
// syncs it.
func (c *fsClient) overwrite(o *fsObject, d int) {
	var inos []int
	for _, s := range o.possible() {
		if s.has(d) && !slices.Contains(inos, s[d].ino) {
			inos = append(inos, s[d].ino)
		}
	}
	content, sync := c.content(), c.rng.IntN(2) == 0
	f, err := os.OpenFile(c.path(d, o.name), os.O_WRONLY|os.O_TRUNC, 0)
	if err == nil {
		_, err = f.WriteString(content)
		if err == nil && sync {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	// Perhaps truncated, and the write not committed.
	c.do(o, fmt.Sprintf("overwrite d%d %q (fsync %v)", d, content, sync), err, writeName(d, content),
		shows{syscall.ENOENT: missing(d)}, writeInode(inos, "", content))
}

// read reads file o's name d: an observation, whatever the outcome.
func (c *fsClient) read(o *fsObject, d int) {
	b, err := os.ReadFile(c.path(d, o.name))
	what := fmt.Sprintf("read d%d", d)
	switch {
	case err == nil:
		what += fmt.Sprintf(" %q", b)
		c.ops.add(outOK)
		o.note(what, nil)
		o.saw(what, holds(d, string(b)))
	case errors.Is(err, syscall.ENOENT):
		c.ops.add(outFailed)
		o.note(what, err)
		o.saw(what+": "+errText(err), missing(d))
	default:
		c.ops.add(outUnknown)
		o.note(what, err)
	}
}

// rename renames o's name d to d2, replacing what o has there.
func (c *fsClient) rename(o *fsObject, d, d2 int) {
	// rename(2) itself: os.Rename refuses to replace a directory.
	err := syscall.Rename(c.path(d, o.name), c.path(d2, o.name))
	what := fmt.Sprintf("rename d%d d%d", d, d2)
	sh := shows{syscall.ENOENT: missing(d), syscall.ENOTEMPTY: holding(d2)}
	if o.dir {
		c.do(o, what, err, rename(d, d2), sh, bury(d2, d), rename(d, d2))
	} else {
		c.do(o, what, err, rename(d, d2), sh)
	}
}

// syncDir fsyncs workload directory d after an operation on o there; it
// changes nothing the model knows.
func (c *fsClient) syncDir(o *fsObject, d int) {
	f, err := os.Open(filepath.Join(c.root, fmt.Sprint("d", d)))
	if err == nil {
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	o.note(fmt.Sprintf("fsync dir d%d", d), err)
	if err != nil {
		c.ops.add(outUnknown)
		return
	}
	c.ops.add(outOK)
}

// mkdir makes directory o's name in directory d, and half the time syncs
// d.
func (c *fsClient) mkdir(o *fsObject, d int) {
	// ENOENT too is unknown: the directory exists.
	c.do(o, fmt.Sprintf("mkdir d%d", d), os.Mkdir(c.path(d, o.name), 0o755), mkdir(d, o.newIno()), shows{syscall.EEXIST: present(d)})
	if c.rng.IntN(2) == 0 {
		c.syncDir(o, d)
	}
}

// probe uses directory o's name d: it makes a file there and removes it.
// A directory that is listed but takes no file (ENOENT) is dead.
func (c *fsClient) probe(o *fsObject, d int) {
	p := filepath.Join(c.path(d, o.name), probeName)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
	if err == nil {
		err = f.Close()
	}
	c.do(o, fmt.Sprintf("create d%d/%s", d, probeName), err, putProbe(d),
		shows{syscall.ENOENT: not(live(d))})
	if errors.Is(err, syscall.ENOENT) {
		return
	}
	c.do(o, fmt.Sprintf("unlink d%d/%s", d, probeName), syscall.Unlink(p), dropProbe(d), shows{syscall.ENOENT: not(holding(d))})
}

// readdir lists workload directory d: an observation of whether each of
// the client's objects has a name there.
func (c *fsClient) readdir(d int) {
	entries, err := os.ReadDir(filepath.Join(c.root, fmt.Sprint("d", d)))
	if err != nil {
		c.ops.add(outUnknown)
		return
	}
	c.ops.add(outOK)
	listed := map[string]bool{}
	for _, e := range entries {
		listed[e.Name()] = true
	}
	for _, o := range c.active() {
		what := fmt.Sprintf("readdir d%d: listed %v", d, listed[o.name])
		o.note(what, nil)
		o.saw(what, func(s fsState) bool { return s.has(d) == listed[o.name] })
	}
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

// seenName is a name as the final check found it in one workload
// directory.
type seenName struct {
	present bool
	dir     bool
	// contents are what the state may hold there: a file's content, or
	// the marks a directory may have.
	contents []string
	ino      uint64
	nlink    uint64
}

// seenObject is an object's names as the final check found them.
type seenObject [fsDirs]seenName

func (g seenObject) String() string {
	var b strings.Builder
	for d, n := range g {
		switch {
		case !n.present:
			fmt.Fprintf(&b, " d%d=-", d)
		case n.dir:
			fmt.Fprintf(&b, " d%d=%v", d, n.contents)
		default:
			fmt.Fprintf(&b, " d%d=ino %d nlink %d %q", d, n.ino, n.nlink, n.contents[0])
		}
	}
	return "{" + b.String()[1:] + "}"
}

// matches reports whether state s shows what was found: the same names
// with the same content, names that are links of one inode where s has
// them so.
func (g seenObject) matches(s fsState) bool {
	for d, n := range g {
		if n.present != s.has(d) || n.present && (n.dir != strings.HasPrefix(s[d].content, dirMark) || !slices.Contains(n.contents, s[d].content)) {
			return false
		}
		for e := range d {
			if n.present && !n.dir && g[e].present && (n.ino == g[e].ino) != (s[d].ino == s[e].ino) {
				return false
			}
		}
	}
	return true
}

// checkObject returns what is wrong with object o found as g after the
// cluster healed, or "": it must be a state o may be in, and each inode's
// link count its names (more only after an unknown outcome).
func checkObject(o *fsObject, g seenObject) string {
	possible := o.possible()
	if !slices.ContainsFunc(possible, g.matches) {
		return fmt.Sprintf("%s is %v; it may only be %v; its operations: %s", o.name, g, possible, o.history())
	}
	for d, n := range g {
		if !n.present || n.dir {
			continue
		}
		names := uint64(0)
		for _, m := range g {
			if m.present && m.ino == n.ino {
				names++
			}
		}
		if n.nlink < names || n.nlink > names && !o.unsure {
			return fmt.Sprintf("%s: d%d has %d links, but %d names; its operations: %s", o.name, d, n.nlink, names, o.history())
		}
	}
	return ""
}

// see finds what name p is: a file, or a directory if its listing says
// so, which must hold nothing but the probe's file and take a new file
// unless it is dead.
func see(p string, dir bool) (seenName, error) {
	n := seenName{present: true, dir: dir}
	if !dir {
		b, err := readHealed(p)
		if err != nil {
			return n, fmt.Errorf("listed but does not open: %w", err)
		}
		n.contents = []string{string(b)}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		return n, fmt.Errorf("listed but does not stat: %w", err)
	}
	n.ino, n.nlink = st.Ino, uint64(st.Nlink)
	if (st.Mode&syscall.S_IFMT == syscall.S_IFDIR) != dir {
		return n, fmt.Errorf("listed as a directory: %v; its mode: %o", dir, st.Mode)
	}
	if !dir {
		return n, nil
	}
	entries, err := os.ReadDir(p)
	if err != nil {
		return n, err
	}
	n.contents = []string{dirMark, deadMark}
	for _, e := range entries {
		if e.Name() != probeName {
			return n, fmt.Errorf("holds %s", e.Name())
		}
		n.contents = []string{probeMark}
	}
	check := filepath.Join(p, "check")
	f, err := os.OpenFile(check, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	switch {
	case errors.Is(err, syscall.ENOENT):
		n.contents = []string{deadMark}
	case err == nil:
		f.Close()
		n.contents = slices.DeleteFunc(n.contents, func(c string) bool { return c == deadMark })
		if err := syscall.Unlink(check); err != nil {
			return n, fmt.Errorf("removing %s: %w", check, err)
		}
	}
	return n, nil
}

// checkFS reads the workload's directories through a mount after the
// cluster healed, and returns the history violations the clients found
// and what is wrong with the objects now: each must be in a state its
// operations allow, with the link counts its names make, and every name
// must be one a client made.
func checkFS(root string, clients []*fsClient) []string {
	var bad []string
	found := map[string]*seenObject{}
	for d := range fsDirs {
		dir := filepath.Join(root, fmt.Sprint("d", d))
		entries, err := os.ReadDir(dir)
		if err != nil {
			return append(bad, fmt.Sprintf("readdir %s: %v", dir, err))
		}
		for _, e := range entries {
			g := found[e.Name()]
			if g == nil {
				g = &seenObject{}
				found[e.Name()] = g
			}
			p := filepath.Join(dir, e.Name())
			n, err := see(p, e.IsDir())
			if err != nil {
				bad = append(bad, fmt.Sprintf("%s: %v", p, err))
			}
			g[d] = n
		}
	}
	for _, c := range clients {
		bad = append(bad, c.violations()...)
		for _, o := range c.objs {
			g := found[o.name]
			delete(found, o.name)
			if g == nil {
				g = &seenObject{}
			}
			if o.violation == "" {
				if v := checkObject(o, *g); v != "" {
					bad = append(bad, v)
				}
			}
		}
	}
	for name := range found {
		bad = append(bad, fmt.Sprintf("%s exists but was never created", name))
	}
	return bad
}
