package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/difuse/difuse/internal/cli"
	"github.com/difuse/difuse/internal/proctest"
)

var mounted = regexp.MustCompile(`msg=mounted`)

// mount starts difuse-mount with an embedded node on mnt and returns its
// process.
func mount(t *testing.T, dataDir, mnt, addr string) *proctest.Proc {
	t.Helper()
	return startMount(t, mnt, "-d", dataDir, "-b", addr, "-a", "127.0.0.1:0")
}

// startMount runs difuse-mount with args on mnt, waits until it is
// mounted, and returns its process. The mount is taken down when the test
// ends, whatever happened.
func startMount(t *testing.T, mnt string, args ...string) *proctest.Proc {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root here")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("no /dev/fuse: the test script installs fuse3: %v", err)
	}
	p := proctest.Start(t, "difuse-mount", append(args, mnt)...)
	t.Cleanup(func() {
		if cli.Mounted(mnt) {
			exec.Command("fusermount3", "-uz", mnt).Run()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := p.WaitLog(ctx, mounted); err != nil {
		t.Fatalf("not mounted: %v\n%s", err, p.Log())
	}
	return p
}

// freeAddr returns a loopback address with a port free now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func unmount(t *testing.T, p *proctest.Proc, mnt string) {
	t.Helper()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(60 * time.Second); err != nil || code != 0 {
		t.Fatalf("difuse-mount exited %d, %v\n%s", code, err, p.Log())
	}
	if cli.Mounted(mnt) {
		t.Fatal("still mounted after SIGTERM")
	}
}

func sh(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// The embedded mount serves everyday file work, and what it holds survives
// an unmount and a new mount on the same data directory.
func TestEmbeddedMount(t *testing.T) {
	data, mnt := t.TempDir(), t.TempDir()
	// The embedded node keeps its address across runs.
	addr := freeAddr(t)
	p := mount(t, data, mnt, addr)
	src := filepath.Join(os.Getenv("GOROOT"), "src", "encoding")
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		src = filepath.Join(strings.TrimSpace(string(out)), "src", "encoding")
	}
	sh(t, mnt, "cp", "-a", src, "tree")
	sh(t, mnt, "diff", "-r", src, "tree")
	if err := os.WriteFile(filepath.Join(mnt, "a.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(mnt, "a.txt"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(", world")
	f.Close()
	if b, _ := os.ReadFile(filepath.Join(mnt, "a.txt")); string(b) != "hello, world" {
		t.Fatalf("a.txt = %q", b)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 3<<20/16+7)
	if err := os.WriteFile(filepath.Join(mnt, "big"), big, 0o600); err != nil {
		t.Fatal(err)
	}
	sh(t, mnt, "mkdir", "-p", "d/e")
	sh(t, mnt, "mv", "a.txt", "b.txt")
	sh(t, mnt, "ln", "-s", "b.txt", "link")
	sh(t, mnt, "chmod", "640", "b.txt")
	sh(t, mnt, "truncate", "-s", "5", "b.txt")
	sh(t, mnt, "touch", "-d", "2020-01-02 03:04:05", "b.txt")
	if out := sh(t, mnt, "stat", "-c", "%a %s %y", "b.txt"); !strings.HasPrefix(out, "640 5 2020-01-02 03:04:05") {
		t.Errorf("stat b.txt = %q", out)
	}
	if out := sh(t, mnt, "cat", "link"); out != "hello" {
		t.Errorf("through the link: %q", out)
	}
	// A name that is not UTF-8.
	raw := filepath.Join(mnt, "caf\xe9")
	if err := os.WriteFile(raw, []byte("latin-1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(raw); err != nil || string(b) != "latin-1" {
		t.Errorf("a non-UTF-8 name reads %q, %v", b, err)
	}
	if err := os.Remove(raw); err != nil {
		t.Error(err)
	}
	// Extended attributes.
	bpath := filepath.Join(mnt, "b.txt")
	if err := syscall.Setxattr(bpath, "user.color", []byte("blue"), 0); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := syscall.Getxattr(bpath, "user.color", buf); err != nil || string(buf[:n]) != "blue" {
		t.Errorf("getxattr = %q, %v", buf[:max(n, 0)], err)
	}
	if n, err := syscall.Listxattr(bpath, buf); err != nil || string(buf[:n]) != "user.color\x00" {
		t.Errorf("listxattr = %q, %v", buf[:max(n, 0)], err)
	}
	if _, err := syscall.Getxattr(bpath, "user.none", buf); err != syscall.ENODATA {
		t.Errorf("getxattr of a missing name: %v, want ENODATA", err)
	}
	if err := syscall.Removexattr(bpath, "user.color"); err != nil {
		t.Error(err)
	}
	if err := os.Remove(filepath.Join(mnt, "d")); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("rmdir of a non-empty directory: %v", err)
	}
	unmount(t, p, mnt)

	p = mount(t, data, mnt, addr)
	sh(t, mnt, "diff", "-r", src, "tree")
	if b, err := os.ReadFile(filepath.Join(mnt, "big")); err != nil || !bytes.Equal(b, big) {
		t.Fatalf("big after remount: %d bytes, %v", len(b), err)
	}
	if out := sh(t, mnt, "ls"); out != "b.txt\nbig\nd\nlink\ntree\n" {
		t.Errorf("ls after remount = %q", out)
	}
	unmount(t, p, mnt)
}

// Bad usage and a missing mountpoint get clear errors and exit codes.
func TestUsage(t *testing.T) {
	bin := proctest.Binary(t, "difuse-mount")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "Usage"},
		{[]string{"/nonexistent/mountpoint"}, 6, "not a directory"},
	} {
		out, err := exec.Command(bin, tc.args...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != tc.code || !strings.Contains(string(out), tc.want) {
			t.Errorf("difuse-mount %v: exit %d, %q; want %d and %q", tc.args, code, out, tc.code, tc.want)
		}
	}
}

var helperMounted = regexp.MustCompile(`mounted \S+ \(pid (\d+), log`)

// The mount helper makes mount -t fuse.difuse and an fstab line work.
func TestMountHelper(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root here")
	}
	helper := filepath.Join(t.TempDir(), "mount.fuse.difuse")
	if err := os.Symlink(proctest.Binary(t, "difuse-mount"), helper); err != nil {
		t.Fatal(err)
	}
	grpc := freeAddr(t)
	data, mnt, logFile := t.TempDir(), t.TempDir(), filepath.Join(t.TempDir(), "mount.log")
	opts := "rw,_netdev,allow_other,dir=" + data + ",grpc=" + grpc + ",http=127.0.0.1:0,attr_valid=2s,write_level=quorum,log=" + logFile
	// mountWith mounts by running cmd, writes a file, unmounts with
	// umount(8), and waits for the mount's process to end.
	mountWith := func(name string, args ...string) {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		t.Cleanup(func() {
			if cli.Mounted(mnt) {
				exec.Command("fusermount3", "-uz", mnt).Run()
			}
		})
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		if !cli.Mounted(mnt) {
			t.Fatalf("%s: not mounted\n%s", name, out)
		}
		m := helperMounted.FindStringSubmatch(string(out))
		if m == nil {
			t.Fatalf("%s said %q", name, out)
		}
		var pid int
		fmt.Sscan(m[1], &pid)
		t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
		if err := os.WriteFile(filepath.Join(mnt, filepath.Base(name)), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		sh(t, "/", "umount", mnt)
		for deadline := time.Now().Add(30 * time.Second); syscall.Kill(pid, 0) == nil; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("difuse-mount (pid %d) still runs after umount", pid)
			}
		}
	}
	mountWith(helper, "embedded", mnt, "-o", opts, "-v")
	if b, err := os.ReadFile(logFile); err != nil || !strings.Contains(string(b), "unmounted from outside") {
		t.Errorf("the mount's log: %q, %v", b, err)
	}
	// mount(8) finds helpers in /sbin only.
	const sbin = "/sbin/mount.fuse.difuse"
	if _, err := os.Lstat(sbin); err == nil {
		t.Skipf("%s exists: not replacing it", sbin)
	}
	if err := os.Symlink(helper, sbin); err != nil {
		t.Skipf("cannot install the helper: %v", err)
	}
	defer os.Remove(sbin)
	mountWith("mount", "-v", "-t", "fuse.difuse", "embedded", mnt, "-o", opts)
	fstab := filepath.Join(t.TempDir(), "fstab")
	os.WriteFile(fstab, []byte("embedded "+mnt+" fuse.difuse "+opts+" 0 0\n"), 0o644)
	mountWith("mount", "-v", "-T", fstab, mnt)
	if out := sh(t, "/", "ls", "-d", filepath.Join(data, "db")); out == "" {
		t.Error("no data directory")
	}
}

// A mount made by root serves every user unless told otherwise; a user's
// own serves that user alone, and both say so when it is not shared.
func TestAllowOtherDefault(t *testing.T) {
	for _, tc := range []struct {
		args []string
		euid int
		want bool
		says string
	}{
		{nil, 0, true, "mounting for every user"},
		{[]string{"-allow-other=false"}, 0, false, "only root can use this mount"},
		{nil, 1000, false, "only this user can use this mount"},
		{[]string{"-allow-other"}, 1000, true, ""},
	} {
		var o options
		flags := newFlags(&o, io.Discard)
		if err := flags.Parse(append(tc.args, "/mnt")); err != nil {
			t.Fatal(err)
		}
		var logged bytes.Buffer
		setAllowOther(&o, flags, tc.euid, slog.New(slog.NewTextHandler(&logged, nil)))
		if o.allowOther != tc.want || !strings.Contains(logged.String(), tc.says) {
			t.Errorf("%v as %d: allow-other %v, logged %q", tc.args, tc.euid, o.allowOther, logged.String())
		}
	}
}
