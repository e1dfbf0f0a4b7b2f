//go:build difuse_fusepatch

package fsnode

import (
	"errors"
	"syscall"
	"testing"

	"bazil.org/fuse"
)

// SEEK_DATA and SEEK_HOLE see buffered writes (they commit first), and a
// sparse file's holes.
func TestLseek(t *testing.T) {
	fss := newFS(t, Options{})
	ctx := ctxT(t)
	f := create(t, root(t, fss[0]), "sparse")
	f.Write(ctx, &fuse.WriteRequest{Offset: 1 << 20, Data: random(4096, 1)}, &fuse.WriteResponse{})
	f.Write(ctx, &fuse.WriteRequest{Offset: 3 << 20, Data: make([]byte, 4096)}, &fuse.WriteResponse{}) // zeros: a hole
	for _, tc := range []struct {
		whence int
		off    int64
		want   int64
	}{{seekData, 0, 1 << 20}, {seekHole, 0, 0}, {seekHole, 1 << 20, 1<<20 + 4096}, {seekData, 1<<20 + 4096, -1}, {seekHole, 3 << 20, 3 << 20}} {
		got, err := f.Lseek(ctx, &fuse.LseekRequest{Offset: tc.off, Whence: tc.whence})
		if tc.want < 0 && !errors.Is(err, fuse.Errno(syscall.ENXIO)) || tc.want >= 0 && (err != nil || got != tc.want) {
			t.Errorf("lseek(%d, whence %d) = %d, %v; want %d", tc.off, tc.whence, got, err, tc.want)
		}
	}
}

// renameat2's flags reach the filesystem.
func TestRenameFlags(t *testing.T) {
	fss := newFS(t, Options{})
	ctx := ctxT(t)
	r := root(t, fss[0])
	create(t, r, "a")
	create(t, r, "b")
	if err := r.Rename(ctx, &fuse.RenameRequest{OldName: "a", NewName: "b", Flags: 1}, r); !errors.Is(err, fuse.Errno(syscall.EEXIST)) {
		t.Errorf("RENAME_NOREPLACE onto an existing name: %v", err)
	}
	if err := r.Rename(ctx, &fuse.RenameRequest{OldName: "a", NewName: "b", Flags: 2}, r); err != nil {
		t.Errorf("RENAME_EXCHANGE: %v", err)
	}
	if err := r.Rename(ctx, &fuse.RenameRequest{OldName: "a", NewName: "b", Flags: 4}, r); !errors.Is(err, fuse.Errno(syscall.EINVAL)) {
		t.Errorf("RENAME_WHITEOUT: %v, want EINVAL", err)
	}
}
