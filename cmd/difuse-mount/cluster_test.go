package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/posixtest"

	"github.com/difuse/difuse/internal/proctest"
	"github.com/difuse/difuse/nodestatus"
)

var serving = regexp.MustCompile(`msg="node serving" id=\w+ grpc=(\S+) http=(\S+)`)

// cluster is 3 difused processes on loopback.
type cluster struct {
	nodes        []*proctest.Proc
	grpcs, https []string
}

// startCluster starts 3 nodes and waits until their ring has settled.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root here")
	}
	c := &cluster{}
	for i := range 3 {
		dir := t.TempDir()
		args := []string{"-b", "127.0.0.1:0", "-a", "127.0.0.1:0", "-d", dir}
		if i > 0 {
			args = append(args, "-j", c.grpcs[0])
		}
		p := proctest.Start(t, "difused", args...)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		m, err := p.WaitLog(ctx, serving)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		proctest.NoteNode(t, m[1], m[2], dir, args)
		c.nodes, c.grpcs, c.https = append(c.nodes, p), append(c.grpcs, m[1]), append(c.https, m[2])
	}
	waitFullSets(t, c.https)
	return c
}

// mount mounts the cluster, through node i, on mnt, and returns the
// mount's process.
func (c *cluster) mount(t *testing.T, i int, mnt string) *proctest.Proc {
	t.Helper()
	return startMount(t, mnt, "-d", t.TempDir(), "-j", c.grpcs[i])
}

// status returns every live node's status.
func (c *cluster) status(t *testing.T) []nodestatus.Status {
	t.Helper()
	var out []nodestatus.Status
	for _, h := range c.https {
		resp, err := proctest.HTTP.Get("http://" + h + "/v1/status")
		if err != nil {
			continue // a node the test killed
		}
		var st nodestatus.Status
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, st)
	}
	return out
}

// stored returns the bytes of blocks all nodes hold, from their status,
// and the bytes their data directories take on disk.
func (c *cluster) stored(t *testing.T) (blocks, disk int64) {
	for _, st := range c.status(t) {
		blocks += st.Blocks.StoredBytes
		out, err := exec.Command("du", "-s", "-B1", st.DataDir).Output()
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		fmt.Sscan(string(out), &n)
		disk += n
	}
	return blocks, disk
}

// goSrc returns the Go toolchain's source tree, or a part of it in -short
// runs.
func goSrc(t *testing.T, part string) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "src", part)
}

// posixSkipped are the posixtest tests for what difuse leaves out, and why
// (docs/filesystem.md lists them too).
var posixSkipped = map[string]string{
	"Fallocate":         "preallocation means nothing for content-addressed blocks: fallocate(2) is EOPNOTSUPP, and tools then write",
	"FallocateKeepSize": "preallocation means nothing for content-addressed blocks: fallocate(2) is EOPNOTSUPP, and tools then write",
	"FcntlFlockLocksFile": "expects a process's second POSIX lock to conflict with its first; locks belong to the process, " +
		"so ext4 fails it too (and go-fuse's own harness skips it)",
	"OpenSymlinkRace": "checks that a passthrough filesystem does not follow a symlink swapped in on its backing store; " +
		"difuse has none, and ext4 fails it too (go-fuse's own harness skips it)",
}

// Everyday tools on a mount of a 3-process cluster: the POSIX suite, a
// real tree copied with cp -a, tar and rsync, links, attributes, a large
// directory and a large file, a second mount, and a copy that survives
// kill -9 of a node.
func TestClusterMount(t *testing.T) {
	c := startCluster(t)
	mnt := t.TempDir()
	top := t // mounts that outlive a subtest belong to the whole test
	p := c.mount(top, 1, mnt)
	short := testing.Short()

	t.Run("posix", func(t *testing.T) {
		names := slices.Sorted(func(yield func(string) bool) {
			for k := range posixtest.All {
				if !yield(k) {
					return
				}
			}
		})
		for _, name := range names {
			t.Run(name, func(t *testing.T) {
				if why, ok := posixSkipped[name]; ok {
					t.Skip(why)
				}
				dir := filepath.Join(mnt, "posix", name)
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				posixtest.All[name](t, dir)
			})
		}
	})

	t.Run("tools", func(t *testing.T) {
		dir := filepath.Join(mnt, "tools")
		sh(t, mnt, "mkdir", "-p", "tools/a/b", "tools/c")
		os.WriteFile(filepath.Join(dir, "a/b/f"), []byte("one\n"), 0o644)
		sh(t, dir, "sh", "-c", "echo two >> a/b/f")
		if b, _ := os.ReadFile(filepath.Join(dir, "a/b/f")); string(b) != "one\ntwo\n" {
			t.Errorf("after >>: %q", b)
		}
		sh(t, dir, "mv", "a/b/f", "c/g")
		sh(t, dir, "mv", "a/b", "c/b")
		if out := sh(t, dir, "find", ".", "-print"); !slices.Equal(sortedLines(out), []string{".", "./a", "./c", "./c/b", "./c/g"}) {
			t.Errorf("after mv across directories: %q", out)
		}
		sh(t, dir, "ln", "c/g", "a/hard")
		sh(t, dir, "ln", "-s", "../c/g", "a/soft")
		if out := sh(t, dir, "stat", "-c", "%h %i", "c/g", "a/hard"); func() bool {
			l := strings.Fields(out)
			return len(l) != 4 || l[0] != "2" || l[1] != l[3]
		}() {
			t.Errorf("hard link: stat says %q", out)
		}
		if out := sh(t, dir, "cat", "a/soft"); out != "one\ntwo\n" {
			t.Errorf("through the symlink: %q", out)
		}
		sh(t, dir, "chown", "1234:5678", "c/g") // before chmod: chown clears setuid
		sh(t, dir, "chmod", "4750", "c/g")
		sh(t, dir, "touch", "-d", "2001-02-03 04:05:06", "c/g")
		if out := sh(t, dir, "stat", "-c", "%a %u %g %y", "a/hard"); !strings.HasPrefix(out, "4750 1234 5678 2001-02-03 04:05:06") {
			t.Errorf("stat after chmod, chown, touch -d: %q", out)
		}
		sh(t, dir, "truncate", "-s", "3", "c/g")
		sh(t, dir, "truncate", "-s", "5000", "a/hard")
		b, _ := os.ReadFile(filepath.Join(dir, "c/g"))
		if len(b) != 5000 || string(b[:3]) != "one" || bytes.ContainsFunc(b[3:], func(r rune) bool { return r != 0 }) {
			t.Errorf("after truncate down and up: %d bytes, %q...", len(b), b[:min(len(b), 8)])
		}
		sh(t, dir, "rm", "c/g")
		if out := sh(t, dir, "stat", "-c", "%h", "a/hard"); out != "1\n" {
			t.Errorf("links after rm of one: %q", out)
		}
		sh(t, mnt, "rm", "-r", "tools")
		// statfs reports the cluster's space.
		var st syscall.Statfs_t
		if err := syscall.Statfs(mnt, &st); err != nil || st.Blocks == 0 || st.Bfree == 0 || st.Bfree > st.Blocks {
			t.Errorf("statfs: %d blocks, %d free, %v", st.Blocks, st.Bfree, err)
		}
	})

	t.Run("bigdir", func(t *testing.T) {
		n := 10000
		if short {
			n = 1000
		}
		dir := filepath.Join(mnt, "bigdir")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("file-%05d", i)), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if out := sh(t, dir, "sh", "-c", "ls | wc -l"); strings.TrimSpace(out) != fmt.Sprint(n) {
			t.Errorf("ls | wc -l = %q, want %d", out, n)
		}
	})

	t.Run("second mount", func(t *testing.T) {
		mnt2 := t.TempDir()
		p2 := c.mount(t, 2, mnt2)
		path := filepath.Join(mnt, "shared")
		for i, content := range []string{"first", "second, longer"} {
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			time.Sleep(1500 * time.Millisecond) // the mounts' cache timeout is 1 s
			if b, err := os.ReadFile(filepath.Join(mnt2, "shared")); err != nil || string(b) != content {
				t.Errorf("write %d: the second mount reads %q, %v", i, b, err)
			}
		}
		os.Remove(path)
		time.Sleep(1500 * time.Millisecond)
		if _, err := os.Stat(filepath.Join(mnt2, "shared")); !os.IsNotExist(err) {
			t.Errorf("the second mount still sees a removed file: %v", err)
		}
		unmount(t, p2, mnt2)
	})

	t.Run("tree", func(t *testing.T) {
		src := goSrc(t, "")
		if short {
			src = goSrc(t, "encoding")
		}
		sh(t, mnt, "cp", "-a", src, "tree")
		sh(t, mnt, "diff", "-r", src, "tree")
		sameMeta(t, src, filepath.Join(mnt, "tree"))
		out := t.TempDir()
		sh(t, mnt, "sh", "-c", "tar cf - tree | (cd "+out+" && tar xf -)")
		sh(t, mnt, "diff", "-r", src, filepath.Join(out, "tree"))
		sh(t, mnt, "mkdir", "rsync")
		sh(t, mnt, "rsync", "-a", filepath.Join(out, "tree")+"/", "rsync/")
		back := t.TempDir()
		sh(t, mnt, "rsync", "-a", "rsync/", back+"/")
		sh(t, mnt, "diff", "-r", src, back)
		sameMeta(t, src, back)
		// A second copy of the same tree stores almost nothing new.
		blocks0, disk0 := c.stored(t)
		sh(t, mnt, "cp", "-a", src, "tree2")
		blocks1, disk1 := c.stored(t)
		grew := float64(blocks1-blocks0) / float64(blocks0)
		t.Logf("second cp -a: block bytes %d -> %d (+%.2f%%); data directories on disk %d -> %d (+%.2f%%)",
			blocks0, blocks1, 100*grew, disk0, disk1, 100*float64(disk1-disk0)/float64(disk0))
		if grew >= 0.02 {
			t.Errorf("a second copy of the tree added %.2f%% to the bytes stored in blocks", 100*grew)
		}
		sh(t, mnt, "diff", "-r", src, "tree2")
	})

	t.Run("large file", func(t *testing.T) {
		size := int64(1 << 30)
		if short {
			size = 64 << 20
		}
		path := filepath.Join(mnt, "large")
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		rng := rand.NewChaCha8([32]byte{1})
		if _, err := io.CopyN(io.MultiWriter(f, h), rng, size); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		want := hex.EncodeToString(h.Sum(nil))
		unmount(t, p, mnt)
		p = c.mount(top, 0, mnt)
		if got := strings.Fields(sh(t, mnt, "sha256sum", "large"))[0]; got != want {
			t.Errorf("sha256 after remount %s, want %s", got, want)
		}
	})

	t.Run("kill during copy", func(t *testing.T) {
		src := goSrc(t, "net")
		if short {
			src = goSrc(t, "encoding")
		}
		cp := exec.Command("cp", "-a", src, "killed")
		cp.Dir = mnt
		var out bytes.Buffer
		cp.Stdout, cp.Stderr = &out, &out
		if err := cp.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cp.Wait() }()
		// Kill a node once the copy is under way.
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
			if n, _ := filepath.Glob(filepath.Join(mnt, "killed", "*")); len(n) >= 5 || time.Now().After(deadline) {
				break
			}
		}
		if err := c.nodes[2].Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		c.nodes[2].Wait(10 * time.Second)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("cp -a with a node killed: %v\n%s", err, out.Bytes())
			}
		case <-time.After(10 * time.Minute):
			cp.Process.Kill()
			t.Fatal("cp -a did not finish in 10 minutes")
		}
		sh(t, mnt, "diff", "-r", src, "killed")
	})
	unmount(t, p, mnt)
}

// sameMeta checks that two trees hold the same names with the same types,
// modes, owners, sizes and modification times (what diff -r leaves out).
func sameMeta(t *testing.T, a, b string) {
	t.Helper()
	list := func(dir string) []string {
		// Directories' sizes are the filesystem's own business.
		out := sh(t, dir, "find", ".", "-type", "d", "-printf", "%y %m %U %G %T@ %p\\n") +
			sh(t, dir, "find", ".", "!", "-type", "d", "-printf", "%y %m %U %G %s %T@ %p\\n")
		l := strings.Split(strings.TrimSpace(out), "\n")
		slices.Sort(l)
		return l
	}
	la, lb := list(a), list(b)
	if len(la) != len(lb) {
		t.Errorf("%s has %d names, %s %d", a, len(la), b, len(lb))
	}
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			t.Errorf("metadata differs:\n%s\n%s", la[i], lb[i])
			return
		}
	}
}

func sortedLines(s string) []string {
	l := strings.Fields(s)
	slices.Sort(l)
	return l
}

// waitFullSets waits until the ring has settled: every vnode's successor
// list covers 3 hosts, so that the filesystem's first partitions get full
// replica sets.
func waitFullSets(t *testing.T, https []string) {
	t.Helper()
	full := func() bool {
		for _, h := range https {
			resp, err := proctest.HTTP.Get("http://" + h + "/v1/status")
			if err != nil {
				return false
			}
			var st struct {
				VNodes []struct {
					Self  struct{ Addr string }
					Succs []struct{ Addr string }
				}
			}
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if err != nil || len(st.VNodes) == 0 {
				return false
			}
			for _, v := range st.VNodes {
				hosts := map[string]bool{v.Self.Addr: true}
				for _, r := range v.Succs {
					hosts[r.Addr] = true
				}
				if len(hosts) < 3 {
					return false
				}
			}
		}
		return true
	}
	for deadline := time.Now().Add(30 * time.Second); !full(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the ring did not settle in 30 s")
		}
	}
}
