package jepsen

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// newFile returns a file whose name in d0 was created with content c.
func newFile(t *testing.T, c string) *fsObject {
	t.Helper()
	o := newObject("f", false)
	o.done("create d0", create(0, o.newIno()))
	o.done("write d0", writeName(0, c))
	ok(t, o)
	return o
}

func ok(t *testing.T, o *fsObject) {
	t.Helper()
	if o.violation != "" {
		t.Fatalf("violation: %s", o.violation)
	}
}

func violated(t *testing.T, o *fsObject, what string) {
	t.Helper()
	if o.violation == "" {
		t.Fatalf("%s: no violation; states %v", what, o.possible())
	}
}

func want(t *testing.T, o *fsObject, states ...fsState) {
	t.Helper()
	got := o.possible()
	if len(got) != len(states) || slices.ContainsFunc(states, func(s fsState) bool { return !slices.Contains(got, s) }) {
		t.Fatalf("states %v, want %v", got, states)
	}
}

func file(ino int, c string) entry { return entry{ino, c} }

// Known outcomes move the one world; an observation no world allows is a
// violation, reported with the object's operations.
func TestFileKnownOutcomes(t *testing.T) {
	o := newFile(t, "a")
	o.saw("read d0", holds(0, "a"))
	o.done("overwrite d0", writeName(0, "b"))
	o.note("rename d0 d2", nil)
	o.done("rename d0 d2", rename(0, 2))
	o.saw("read d0", missing(0))
	ok(t, o)
	want(t, o, fsState{2: file(1, "b")})
	o.saw(`read d2 "zz"`, holds(2, "zz"))
	violated(t, o, "a read of content never written")
	if !strings.Contains(o.violation, `read d2 "zz"`) || !strings.Contains(o.violation, "rename d0 d2") {
		t.Errorf("the report names neither the read nor the history: %s", o.violation)
	}
	o = newFile(t, "a")
	o.done("unlink d1", unlink(1))
	violated(t, o, "an unlink of a name never made")
}

// An unknown create may take effect after later operations, or never.
func TestFileUnknownCreate(t *testing.T) {
	o := newObject("f", false)
	o.unknown(create(0, o.newIno()))
	want(t, o, fsState{}, fsState{0: file(1, "")})
	o.saw("read d0: ENOENT", missing(0))
	o.saw("readdir d0: listed false", missing(0))
	o.saw(`read d0 ""`, holds(0, "")) // it took effect after all
	ok(t, o)
	want(t, o, fsState{0: file(1, "")})

	o = newObject("f", false)
	o.unknown(create(0, o.newIno()))
	o.done("create d0", create(0, o.newIno())) // so the first never did
	o.done("write d0", writeName(0, "b"))
	o.saw(`read d0 "b"`, holds(0, "b"))
	ok(t, o)
	want(t, o, fsState{0: file(2, "b")})

	// An unknown overwrite may leave the file truncated, or written, or
	// as it was; once seen written, it cannot be as it was again.
	o = newFile(t, "a")
	o.unknown(writeInode([]int{1}, "", "b"))
	want(t, o, fsState{0: file(1, "a")}, fsState{0: file(1, "")}, fsState{0: file(1, "b")})
	o.saw(`read d0 "b"`, holds(0, "b"))
	o.saw(`read d0 "a"`, holds(0, "a"))
	if o.violation != "" {
		t.Fatalf("a stale view within %v: %s", staleFor, o.violation)
	}
	o.ruledOut[0].at = time.Now().Add(-2 * staleFor)
	o.saw(`read d0 "a"`, holds(0, "a"))
	violated(t, o, "content seen replaced, long after")
}

// Hard links share content; the final check wants them to share an inode
// and their link count to be their names.
func TestFileLinks(t *testing.T) {
	o := newFile(t, "a")
	o.done("link d0 d1", link(0, 1))
	o.done("overwrite d1", writeName(1, "b"))
	o.saw(`read d0 "b"`, holds(0, "b"))
	ok(t, o)
	name := func(ino, nlink uint64) seenName {
		return seenName{present: true, contents: []string{"b"}, ino: ino, nlink: nlink}
	}
	for _, tc := range []struct {
		what string
		g    seenObject
		ok   bool
	}{
		{"links", seenObject{name(7, 2), name(7, 2)}, true},
		{"two inodes", seenObject{name(7, 1), name(8, 1)}, false},
		{"a link count too low", seenObject{name(7, 1), name(7, 1)}, false},
		{"a link count too high", seenObject{name(7, 3), name(7, 3)}, false},
		{"a name lost", seenObject{name(7, 1)}, false},
		{"an old content", seenObject{name(7, 2), {present: true, contents: []string{"a"}, ino: 7, nlink: 2}}, false},
	} {
		if got := checkObject(o, tc.g); (got == "") != tc.ok {
			t.Errorf("%s: %q, want ok %v", tc.what, got, tc.ok)
		}
	}
	// After an unknown outcome a link count may be too high, never low.
	o.unknown(unlink(2))
	if got := checkObject(o, seenObject{name(7, 3), name(7, 3)}); got != "" {
		t.Errorf("a link count too high after an unknown outcome: %s", got)
	}
}

// A rename onto a link of the same inode leaves both names; onto another
// inode it replaces it.
func TestFileRenameOver(t *testing.T) {
	o := newFile(t, "a")
	o.done("link d0 d1", link(0, 1))
	o.done("rename d0 d1", rename(0, 1))
	want(t, o, fsState{file(1, "a"), file(1, "a")})
	o.done("create d2", create(2, o.newIno()))
	o.done("write d2", writeInode([]int{2}, "c"))
	o.done("rename d2 d0", rename(2, 0))
	o.saw("read d2: ENOENT", missing(2))
	ok(t, o)
	want(t, o, fsState{file(2, "c"), file(1, "a")})
	// An unknown rename stays pending past maxPending later operations:
	// then the worlds keep both what it did and what it did not.
	o = newFile(t, "a")
	o.unknown(rename(0, 1))
	for range maxPending {
		o.unknown(writeName(2, "z"))
	}
	if got := o.possible(); !slices.Contains(got, fsState{0: file(1, "a")}) || !slices.Contains(got, fsState{1: file(1, "a")}) {
		t.Errorf("retired rename: %v, want it done and not", got)
	}
}

// Directories: mkdir, rename over an empty one, rmdir of one the probe
// left a file in; and the final check.
func TestFileDirs(t *testing.T) {
	o := newObject("D", true)
	o.done("mkdir d0", mkdir(0, o.newIno()))
	o.done("mkdir d1", mkdir(1, o.newIno()))
	o.saw("mkdir d1: EEXIST", present(1))
	o.done("rename d0 d1", rename(0, 1))
	want(t, o, fsState{1: {1, dirMark}})
	o.unknown(putProbe(1))
	o.saw("rmdir d1: ENOTEMPTY", holding(1))
	o.done("unlink d1/p", dropProbe(1))
	o.done("mkdir d2", mkdir(2, o.newIno()))
	ok(t, o)
	dir := func(marks ...string) seenName { return seenName{present: true, dir: true, contents: marks} }
	if got := checkObject(o, seenObject{1: dir(dirMark, deadMark), 2: dir(dirMark)}); got != "" {
		t.Errorf("final state: %s", got)
	}
	for _, g := range []seenObject{{1: dir(probeMark), 2: dir(dirMark)}, {1: dir(deadMark), 2: dir(dirMark)}, {2: dir(dirMark)}} {
		if checkObject(o, g) == "" {
			t.Errorf("%v passes; only %v may be", g, o.possible())
		}
	}
	o.done("rmdir d1", rmdir(1))
	o.saw("readdir d1: listed false", missing(1))
	o.unknown(putProbe(2))
	o.done("rename d2 d1", rename(2, 1))
	want(t, o, fsState{1: {3, dirMark}}, fsState{1: {3, probeMark}})
	o.done("rmdir d1", rmdir(1)) // so the probe's file never got there
	want(t, o, fsState{})
	ok(t, o)
	o = newObject("D", true)
	o.done("mkdir d0", mkdir(0, o.newIno()))
	o.done("mkdir d1", mkdir(1, o.newIno()))
	o.done("create d1/p", putProbe(1))
	o.done("rename d0 d1", rename(0, 1))
	violated(t, o, "a rename onto a directory that is not empty")
}

// A directory known to be there that takes no file is dead, which only
// an rmdir or a rename onto it that did not finish leaves.
func TestFileDeadDir(t *testing.T) {
	o := newObject("D", true)
	o.done("mkdir d0", mkdir(0, o.newIno()))
	o.saw("create d0/p: ENOENT", not(live(0)))
	violated(t, o, "a new directory takes no file")

	o = newObject("D", true)
	o.done("mkdir d0", mkdir(0, o.newIno()))
	o.unknown(bury(0, -1), rmdir(0))
	o.saw("create d0/p: ENOENT", not(live(0)))
	o.saw("readdir d0: listed true", present(0))
	want(t, o, fsState{0: {1, deadMark}}, fsState{}) // the rmdir may yet finish
	o.done("rmdir d0", rmdir(0))
	ok(t, o)

	o = newObject("D", true)
	o.done("mkdir d0", mkdir(0, o.newIno()))
	o.done("mkdir d1", mkdir(1, o.newIno()))
	o.unknown(bury(1, 0), rename(0, 1))
	o.saw("create d1/p: ENOENT", not(live(1)))
	// d1 is dead, and the rename may still finish.
	want(t, o, fsState{{1, dirMark}, {2, deadMark}}, fsState{1: {1, dirMark}})
	o.done("rmdir d1", rmdir(1))
	want(t, o, fsState{0: {1, dirMark}}, fsState{}, fsState{1: {1, dirMark}})
	ok(t, o)
}

// Clients on a plain local directory tree, where every operation succeeds
// or fails for what it finds: the model accepts what they see, and the
// final check what is left.
func TestFileClientsOnLocalDir(t *testing.T) {
	root := t.TempDir()
	if err := setupFS(root); err != nil {
		t.Fatal(err)
	}
	counts := &fsCounts{}
	var clients []*fsClient
	for i := range 2 {
		clients = append(clients, &fsClient{id: i, root: root, rng: rand.New(rand.NewPCG(1, uint64(i))), ops: counts})
	}
	for i := range 2000 {
		clients[i%2].step(context.Background())
	}
	if bad := checkFS(root, clients); len(bad) > 0 {
		t.Fatalf("%d violations; the first: %s", len(bad), bad[0])
	}
	if counts.unk > 0 {
		t.Errorf("%d unknown outcomes", counts.unk)
	}
	var ops strings.Builder
	for _, c := range clients {
		for _, o := range c.objs {
			ops.WriteString(strings.Join(o.ops, "\n"))
		}
	}
	for _, op := range []string{"create d", "overwrite", "read d", "rename", "link", "unlink d", "readdir", "fsync dir",
		"mkdir", "rmdir d", "create d0/p", "no such file"} {
		if !strings.Contains(ops.String(), op) {
			t.Errorf("no %q among the operations", op)
		}
	}
}
