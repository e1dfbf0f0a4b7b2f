package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The POSIX behaviours a local filesystem has and the mount once lacked,
// each checked through the kernel on an embedded mount: special files, the
// sticky bit and its rule, directories' times and link counts, "." and
// "..", a file unlinked while open, renameat2's flags, and SEEK_DATA and
// SEEK_HOLE.
func TestPOSIXMount(t *testing.T) {
	mnt := t.TempDir()
	os.Chmod(filepath.Dir(mnt), 0o755) // other users reach the mount
	mount(t, t.TempDir(), mnt, freeAddr(t))
	path := func(name string) string { return filepath.Join(mnt, name) }
	needsPatch := func(t *testing.T) {
		if !fusePatched {
			t.Skip("needs the patched bazil.org/fuse: run the tests through scripts/test.sh, or with the GOWORK and GOFLAGS scripts/env.sh sets")
		}
	}

	t.Run("special files", func(t *testing.T) {
		if err := unix.Mkfifo(path("fifo"), 0o600); err != nil {
			t.Fatalf("mkfifo: %v", err)
		}
		if err := unix.Mknod(path("null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
			t.Fatalf("mknod c: %v", err)
		}
		if err := unix.Mknod(path("blk"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 0))); err != nil {
			t.Fatalf("mknod b: %v", err)
		}
		var st unix.Stat_t
		if err := unix.Stat(path("null"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) {
			t.Errorf("the character device: mode %o, rdev %#x, %v", st.Mode, st.Rdev, err)
		}
		if err := unix.Stat(path("fifo"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
			t.Errorf("the fifo: mode %o, %v", st.Mode, err)
		}
		// A fifo works: what one end writes the other reads.
		done := make(chan error, 1)
		go func() {
			f, err := os.OpenFile(path("fifo"), os.O_WRONLY, 0)
			if err == nil {
				_, err = f.Write([]byte("through the pipe"))
				f.Close()
			}
			done <- err
		}()
		got, err := os.ReadFile(path("fifo"))
		if err != nil || string(got) != "through the pipe" || <-done != nil {
			t.Errorf("through the fifo: %q, %v", got, err)
		}
		// A unix socket binds in the mount.
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path("sock"), Net: "unix"})
		if err != nil {
			t.Fatalf("bind a unix socket: %v", err)
		}
		ln.SetUnlinkOnClose(false)
		ln.Close()
		if err := unix.Stat(path("sock"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			t.Errorf("the socket: mode %o, %v", st.Mode, err)
		}
	})

	t.Run("sticky bit", func(t *testing.T) {
		needsPatch(t)
		tmp := path("tmp")
		if err := os.Mkdir(tmp, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := unix.Chmod(tmp, 0o1777); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(tmp)
		if err != nil || fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
			t.Fatalf("chmod 1777 then stat: %v, %v", fi.Mode(), err)
		}
		// Root's file in the sticky directory: another user may not
		// remove or rename it, though the directory is writable to all.
		if err := os.WriteFile(filepath.Join(tmp, "roots"), []byte("x"), 0o666); err != nil {
			t.Fatal(err)
		}
		for _, cmd := range [][]string{{"rm", "-f", filepath.Join(tmp, "roots")}, {"mv", filepath.Join(tmp, "roots"), filepath.Join(tmp, "mine")}} {
			c := exec.Command(cmd[0], cmd[1:]...)
			c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			if out, err := c.CombinedOutput(); err == nil || !strings.Contains(string(out), "not permitted") {
				t.Errorf("%v as nobody in a sticky directory: %v, %s", cmd, err, out)
			}
		}
		if _, err := os.Stat(filepath.Join(tmp, "roots")); err != nil {
			t.Errorf("root's file in the sticky directory: %v", err)
		}
	})

	t.Run("directory times and links", func(t *testing.T) {
		d := path("d")
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		var before, after unix.Stat_t
		unix.Stat(d, &before)
		if before.Nlink != 2 {
			t.Errorf("a new directory has %d links", before.Nlink)
		}
		time.Sleep(10 * time.Millisecond)
		for _, op := range []struct {
			what  string
			do    func() error
			links uint64
		}{
			{"create", func() error { return os.WriteFile(filepath.Join(d, "f"), nil, 0o644) }, 2},
			{"mkdir", func() error { return os.Mkdir(filepath.Join(d, "sub"), 0o755) }, 3},
			{"symlink", func() error { return os.Symlink("f", filepath.Join(d, "l")) }, 3},
			{"link", func() error { return os.Link(filepath.Join(d, "f"), filepath.Join(d, "g")) }, 3},
			{"rename", func() error { return os.Rename(filepath.Join(d, "g"), filepath.Join(d, "h")) }, 3},
			{"unlink", func() error { return os.Remove(filepath.Join(d, "h")) }, 3},
			{"rmdir", func() error { return os.Remove(filepath.Join(d, "sub")) }, 2},
		} {
			unix.Stat(d, &before)
			time.Sleep(10 * time.Millisecond)
			if err := op.do(); err != nil {
				t.Fatalf("%s: %v", op.what, err)
			}
			unix.Stat(d, &after)
			if !(after.Mtim.Nano() > before.Mtim.Nano() && after.Ctim.Nano() > before.Ctim.Nano()) || after.Nlink != op.links {
				t.Errorf("%s: mtime %d -> %d, ctime %d -> %d, nlink %d (want %d)", op.what, before.Mtim.Nano(), after.Mtim.Nano(), before.Ctim.Nano(), after.Ctim.Nano(), after.Nlink, op.links)
			}
		}
		out := sh(t, d, "ls", "-a")
		if !strings.HasPrefix(out, ".\n..\n") {
			t.Errorf("ls -a lists %q", out)
		}
	})

	t.Run("unlinked while open", func(t *testing.T) {
		f, err := os.OpenFile(path("open"), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.Write([]byte("written before "))
		if err := os.Remove(path("open")); err != nil {
			t.Fatal(err)
		}
		f.Write([]byte("and after"))
		buf := make([]byte, 100)
		n, err := f.ReadAt(buf, 0)
		if (err != nil && !errors.Is(err, io.EOF)) || string(buf[:n]) != "written before and after" {
			t.Errorf("pread of the unlinked file: %q, %v", buf[:n], err)
		}
		if err := f.Close(); err != nil {
			t.Errorf("close of the unlinked file: %v", err)
		}
	})

	t.Run("renameat2", func(t *testing.T) {
		needsPatch(t)
		os.WriteFile(path("ra"), []byte("a"), 0o644)
		os.WriteFile(path("rb"), []byte("b"), 0o644)
		if err := unix.Renameat2(unix.AT_FDCWD, path("ra"), unix.AT_FDCWD, path("rb"), unix.RENAME_NOREPLACE); !errors.Is(err, unix.EEXIST) {
			t.Errorf("RENAME_NOREPLACE onto an existing name: %v, want EEXIST", err)
		}
		if err := os.Mkdir(path("other"), 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(path("other/rc"), []byte("c"), 0o644)
		if err := unix.Renameat2(unix.AT_FDCWD, path("ra"), unix.AT_FDCWD, path("rb"), unix.RENAME_EXCHANGE); err != nil {
			t.Fatalf("RENAME_EXCHANGE: %v", err)
		}
		if err := unix.Renameat2(unix.AT_FDCWD, path("ra"), unix.AT_FDCWD, path("other/rc"), unix.RENAME_EXCHANGE); err != nil {
			t.Fatalf("RENAME_EXCHANGE across directories: %v", err)
		}
		for name, want := range map[string]string{"ra": "c", "rb": "a", "other/rc": "b"} {
			if got, err := os.ReadFile(path(name)); err != nil || string(got) != want {
				t.Errorf("%s holds %q, %v; want %q", name, got, err, want)
			}
		}
		if out, err := exec.Command("mv", "-n", path("ra"), path("rb")).CombinedOutput(); err != nil {
			t.Errorf("mv -n: %v, %s", err, out)
		}
		if got, _ := os.ReadFile(path("rb")); string(got) != "a" {
			t.Errorf("mv -n replaced the file: %q", got)
		}
	})

	t.Run("holes", func(t *testing.T) {
		needsPatch(t)
		f, err := os.Create(path("sparse"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		data := bytes.Repeat([]byte("data"), 1024)
		if _, err := f.WriteAt(data, 8<<20); err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(32 << 20); err != nil {
			t.Fatal(err)
		}
		fd := int(f.Fd())
		if off, err := unix.Seek(fd, 0, unix.SEEK_DATA); err != nil || off != 8<<20 {
			t.Errorf("SEEK_DATA from 0: %d, %v", off, err)
		}
		if off, err := unix.Seek(fd, 8<<20, unix.SEEK_HOLE); err != nil || off != 8<<20+4096 {
			t.Errorf("SEEK_HOLE from the data: %d, %v", off, err)
		}
		if _, err := unix.Seek(fd, 9<<20, unix.SEEK_DATA); !errors.Is(err, unix.ENXIO) {
			t.Errorf("SEEK_DATA in the trailing hole: %v, want ENXIO", err)
		}
		// cp --sparse=always keeps the holes of a copy.
		sh(t, mnt, "cp", "--sparse=always", "sparse", "sparse2")
		var st unix.Stat_t
		unix.Stat(path("sparse2"), &st)
		if got, _ := os.ReadFile(path("sparse2")); len(got) != 32<<20 || !bytes.Equal(got[8<<20:8<<20+4096], data) {
			t.Errorf("the copy differs")
		}
	})
}
