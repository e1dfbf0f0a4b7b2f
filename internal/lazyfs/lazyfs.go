//go:build linux

package lazyfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// FS is a mounted lazy filesystem.
type FS struct {
	mountpoint string
	server     *fuse.Server
	conn       uint32 // the FUSE connection number: the mount's minor device number
	cache      *cache

	mu     sync.Mutex
	closed bool // set once Crash or Unmount has taken the mount down
}

var errClosed = errors.New("lazyfs: filesystem already crashed or unmounted")

// Mount serves a lazy filesystem over the directory backing at the directory
// mountpoint and returns it once mounted.
func Mount(backing, mountpoint string) (*FS, error) {
	backing, err := filepath.Abs(backing)
	if err != nil {
		return nil, fmt.Errorf("lazyfs: backing directory: %w", err)
	}
	mountpoint, err = filepath.Abs(mountpoint)
	if err != nil {
		return nil, fmt.Errorf("lazyfs: mountpoint: %w", err)
	}
	fi, err := os.Stat(backing)
	if err != nil {
		return nil, fmt.Errorf("lazyfs: backing directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("lazyfs: backing directory %s is not a directory", backing)
	}

	c := &cache{files: make(map[uint64]*file)}
	root := &fs.LoopbackRoot{Path: backing, Dev: uint64(fi.Sys().(*syscall.Stat_t).Dev)}
	root.RootNode = &node{LoopbackNode: &fs.LoopbackNode{RootData: root}, cache: c}
	// Sizes depend on the cache, so the kernel must not keep attributes;
	// names change only through the mount, so it may keep those briefly.
	entryTimeout, attrTimeout := time.Second, time.Duration(0)
	server, err := fs.Mount(mountpoint, root.RootNode, &fs.Options{
		EntryTimeout: &entryTimeout,
		AttrTimeout:  &attrTimeout,
		MountOptions: fuse.MountOptions{
			FsName:      backing,
			Name:        "lazyfs",
			DirectMount: true,
			Logger:      log.New(io.Discard, "", 0),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("lazyfs: mount %s: %w", mountpoint, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return nil, errors.Join(fmt.Errorf("lazyfs: stat mountpoint: %w", err), server.Unmount())
	}
	return &FS{mountpoint: mountpoint, server: server, conn: unix.Minor(st.Dev), cache: c}, nil
}

// Crash loses what was never synced, as a power cut does. It aborts the FUSE
// connection through /sys/fs/fuse/connections/<connection>/abort (mounting
// fusectl there first if it is not), so that the kernel drops its own cached
// pages without writing them back; waits for the server to end; drops every
// file's cached bytes; and unmounts, lazily if files on the mount are still
// open. Writes and syncs that reach the server once Crash has begun fail with
// EIO. Crash needs root. After Crash the FS cannot be used: Mount the backing
// directory again to see what survived.
func (f *FS) Crash() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errClosed
	}
	f.closed = true
	f.cache.crashed.Store(true)
	err := abortConn(f.conn)
	if err == nil {
		f.server.Wait()
	}
	f.cache.drop()
	return errors.Join(err, detach(f.mountpoint))
}

// Unmount shuts the filesystem down cleanly: it unmounts it, waits for the
// server to end, then writes every file's cached bytes to its backing file
// and fsyncs it, so that nothing written through the mount is lost. If the
// mount is busy (files on it are open), Unmount fails and leaves the
// filesystem mounted and usable. After Unmount the FS cannot be used.
func (f *FS) Unmount() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errClosed
	}
	if err := f.server.Unmount(); err != nil {
		return fmt.Errorf("lazyfs: unmount %s: %w", f.mountpoint, err)
	}
	f.closed = true
	return f.cache.syncAll()
}

const (
	connectionsDir = "/sys/fs/fuse/connections"
	fusectlMagic   = 0x65735543 // FUSE_CTL_SUPER_MAGIC
)

// abortConn aborts the FUSE connection conn, mounting fusectl on
// connectionsDir first if it is not mounted there.
func abortConn(conn uint32) error {
	var sfs unix.Statfs_t
	if err := unix.Statfs(connectionsDir, &sfs); err != nil {
		return fmt.Errorf("lazyfs: abort FUSE connection: %w", err)
	}
	if sfs.Type != fusectlMagic {
		if err := unix.Mount("fusectl", connectionsDir, "fusectl", 0, ""); err != nil {
			return fmt.Errorf("lazyfs: mount fusectl on %s: %w", connectionsDir, err)
		}
	}
	name := filepath.Join(connectionsDir, strconv.FormatUint(uint64(conn), 10), "abort")
	abort, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("lazyfs: abort FUSE connection: %w", err)
	}
	_, err = abort.WriteString("1")
	if cerr := abort.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("lazyfs: abort FUSE connection: %w", err)
	}
	return nil
}

// detach unmounts mountpoint, lazily if it is busy.
func detach(mountpoint string) error {
	err := unix.Unmount(mountpoint, 0)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(mountpoint, unix.MNT_DETACH)
	}
	if err != nil {
		return fmt.Errorf("lazyfs: unmount %s: %w", mountpoint, err)
	}
	return nil
}

// cache holds the bytes written to the files of a lazy filesystem and not
// yet synced, per backing inode.
type cache struct {
	crashed atomic.Bool   // once set, writes and syncs fail
	syncs   atomic.Uint64 // counts the syncs that wrote cached bytes to a backing file

	mu    sync.Mutex
	files map[uint64]*file // by backing inode number
}

// file is the cache of one backing file. It exists while the file has open
// handles or cached bytes.
type file struct {
	cache *cache
	ino   uint64
	refs  int // guarded by cache.mu: handles, calls in progress, and one while data is not empty

	mu    sync.RWMutex
	opens int      // open handles
	fd    *os.File // a writable descriptor of the backing file, set exactly while data is not empty
	data  extents
}

// acquire returns the file of backing inode ino, with a reference that the
// caller must release. If the inode has no file, acquire creates one if
// create is set and returns nil otherwise.
func (c *cache) acquire(ino uint64, create bool) *file {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.files[ino]
	if f == nil {
		if !create {
			return nil
		}
		f = &file{cache: c, ino: ino}
		c.files[ino] = f
	}
	f.refs++
	return f
}

// hold takes another reference to f.
func (c *cache) hold(f *file) {
	c.mu.Lock()
	f.refs++
	c.mu.Unlock()
}

// release drops a reference to f, forgetting f when none is left.
func (c *cache) release(f *file) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f.refs--
	if f.refs == 0 {
		delete(c.files, f.ino)
	}
}

// all returns the files of c.
func (c *cache) all() []*file {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Collect(maps.Values(c.files))
}

// drop forgets every file's cached bytes.
func (c *cache) drop() {
	for _, f := range c.all() {
		f.mu.Lock()
		f.discard()
		f.mu.Unlock()
	}
}

// syncAll writes every file's cached bytes to its backing file and fsyncs
// it.
func (c *cache) syncAll() error {
	var errs []error
	for _, f := range c.all() {
		f.mu.Lock()
		if f.fd != nil {
			if err := f.sync(int(f.fd.Fd()), false); err != nil {
				errs = append(errs, fmt.Errorf("lazyfs: write back inode %d: %w", f.ino, err))
			}
		}
		f.mu.Unlock()
	}
	return errors.Join(errs...)
}

// forgetUnlinked forgets the cached bytes of backing inode ino if it has
// neither a name nor an open handle left.
func (c *cache) forgetUnlinked(ino uint64) {
	f := c.acquire(ino, false)
	if f == nil {
		return
	}
	f.mu.Lock()
	f.forgetUnlinked()
	f.mu.Unlock()
	c.release(f)
}

// overlay lays the size of the cached bytes over attr, the attributes of
// the backing file at path as stat'ed after c.syncs read gen. A sync since
// then may have moved cached bytes to the backing file after the stat, so
// overlay stats path again until no sync intervenes.
func (c *cache) overlay(attr *fuse.Attr, path string, gen uint64) {
	for attr.Mode&syscall.S_IFMT == syscall.S_IFREG {
		if f := c.acquire(attr.Ino, false); f != nil {
			f.mu.RLock()
			attr.Size = f.size(attr.Size)
			f.mu.RUnlock()
			c.release(f)
		}
		now := c.syncs.Load()
		if now == gen {
			return
		}
		gen = now
		var st syscall.Stat_t
		if syscall.Lstat(path, &st) != nil {
			return
		}
		attr.FromStat(&st)
	}
}

// open turns fh, a loopback file opened with flags, into a handle.
func (c *cache) open(ctx context.Context, fh fs.FileHandle, flags uint32) (*handle, syscall.Errno) {
	lf := fh.(*fs.LoopbackFile) // what the loopback opens
	// PassthroughFd only reports the descriptor lf owns: handle offers no
	// passthrough, so all I/O still comes through this process.
	fd, ok := lf.PassthroughFd()
	if !ok {
		lf.Release(ctx)
		return nil, syscall.EBADF
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		lf.Release(ctx)
		return nil, fs.ToErrno(err)
	}
	f := c.acquire(st.Ino, true)
	f.mu.Lock()
	f.opens++
	if flags&syscall.O_TRUNC != 0 {
		// The loopback truncated the backing file as it opened it.
		f.truncate(0)
	}
	f.mu.Unlock()
	return &handle{lf: lf, fd: fd, file: f}, 0
}

// size returns the file's size given its backing file's. The caller holds
// f.mu.
func (f *file) size(backing uint64) uint64 {
	return max(backing, uint64(f.data.end()))
}

// write caches p at off; fd is a writable descriptor of the backing file.
// The caller holds f.mu.
func (f *file) write(fd int, off int64, p []byte) error {
	if f.cache.crashed.Load() {
		return syscall.EIO
	}
	if len(p) == 0 {
		return nil
	}
	if f.fd == nil {
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return err
		}
		f.fd = os.NewFile(uintptr(dup), "")
		f.cache.hold(f)
	}
	f.data.write(off, p)
	return nil
}

// truncate cuts the cached bytes past size, once the backing file has been
// truncated to size. The caller holds f.mu.
func (f *file) truncate(size int64) {
	f.data.truncate(size)
	if len(f.data) == 0 {
		f.discard()
	}
}

// sync writes the cached bytes to the backing file, fsyncs it (or
// fdatasyncs it if datasync is set) and drops them. fd is a descriptor of
// the backing file, which sync fsyncs if nothing is cached. The caller holds
// f.mu.
func (f *file) sync(fd int, datasync bool) error {
	if f.cache.crashed.Load() {
		return syscall.EIO
	}
	if f.fd != nil {
		for _, x := range f.data {
			if _, err := f.fd.WriteAt(x.data, x.off); err != nil {
				return err
			}
		}
		f.cache.syncs.Add(1)
		fd = int(f.fd.Fd())
	}
	var err error
	if datasync {
		err = unix.Fdatasync(fd)
	} else {
		err = unix.Fsync(fd)
	}
	if err != nil {
		return err
	}
	f.discard()
	return nil
}

// discard drops the cached bytes. The caller holds f.mu.
func (f *file) discard() {
	if f.fd == nil {
		return
	}
	f.fd.Close() // a duplicate descriptor, only ever written with pwrite
	f.fd, f.data = nil, nil
	f.cache.release(f)
}

// forgetUnlinked drops the cached bytes if the file has neither an open
// handle nor a name left: nothing could sync them, and they would keep the
// backing inode alive. The caller holds f.mu.
func (f *file) forgetUnlinked() {
	if f.fd == nil || f.opens > 0 {
		return
	}
	var st syscall.Stat_t
	if syscall.Fstat(int(f.fd.Fd()), &st) == nil && st.Nlink == 0 {
		f.discard()
	}
}

// extent is a run of cached bytes starting at off.
type extent struct {
	off  int64
	data []byte
}

func (x extent) end() int64 { return x.off + int64(len(x.data)) }

// extents are the cached bytes of a file: sorted, disjoint and not adjacent
// extents.
type extents []extent

// end returns the offset past the last cached byte, or 0.
func (xs extents) end() int64 {
	if len(xs) == 0 {
		return 0
	}
	return xs[len(xs)-1].end()
}

// write lays p over the cached bytes at off.
func (xs *extents) write(off int64, p []byte) {
	end := off + int64(len(p))
	s := *xs
	// Merge p with the extents [i, j), which overlap or touch it.
	i := sort.Search(len(s), func(k int) bool { return s[k].end() >= off })
	j := i
	for j < len(s) && s[j].off <= end {
		j++
	}
	if i == j {
		*xs = slices.Insert(s, i, extent{off, bytes.Clone(p)})
		return
	}
	start, last := min(s[i].off, off), max(s[j-1].end(), end)
	var buf []byte
	from := i
	if s[i].off == start {
		// Grow the first extent in place, so that appends are amortized.
		buf = slices.Grow(s[i].data, int(last-s[i].end()))[:last-start]
		from++
	} else {
		buf = make([]byte, last-start)
	}
	for _, x := range s[from:j] {
		copy(buf[x.off-start:], x.data)
	}
	copy(buf[off-start:], p)
	s[i] = extent{start, buf}
	*xs = slices.Delete(s, i+1, j)
}

// truncate drops the cached bytes at and past size.
func (xs *extents) truncate(size int64) {
	s := *xs
	i := sort.Search(len(s), func(k int) bool { return s[k].end() > size })
	if i < len(s) && s[i].off < size {
		s[i].data = s[i].data[:size-s[i].off]
		i++
	}
	*xs = slices.Delete(s, i, len(s))
}

// zero zeroes the cached bytes in [off, end).
func (xs extents) zero(off, end int64) {
	xs.each(off, end, func(_ int64, data []byte) { clear(data) })
}

// copyTo copies the cached bytes in [off, off+len(buf)) to buf.
func (xs extents) copyTo(buf []byte, off int64) {
	xs.each(off, off+int64(len(buf)), func(at int64, data []byte) { copy(buf[at-off:], data) })
}

// each calls fn with every run of cached bytes in [off, end) and its offset.
func (xs extents) each(off, end int64, fn func(at int64, data []byte)) {
	if off >= end {
		return
	}
	i := sort.Search(len(xs), func(k int) bool { return xs[k].end() > off })
	for _, x := range xs[i:] {
		if x.off >= end {
			return
		}
		lo, hi := max(x.off, off), min(x.end(), end)
		fn(lo, x.data[lo-x.off:hi-x.off])
	}
}

// node is a loopback node whose files keep written bytes in the cache.
type node struct {
	*fs.LoopbackNode
	cache *cache
}

var (
	_ fs.NodeWrapChilder = (*node)(nil)
	_ fs.NodeLookuper    = (*node)(nil)
	_ fs.NodeGetattrer   = (*node)(nil)
	_ fs.NodeSetattrer   = (*node)(nil)
	_ fs.NodeStatxer     = (*node)(nil)
	_ fs.NodeOpener      = (*node)(nil)
	_ fs.NodeCreater     = (*node)(nil)
	_ fs.NodeTmpfiler    = (*node)(nil)
	_ fs.NodeLinker      = (*node)(nil)
	_ fs.NodeUnlinker    = (*node)(nil)
	_ fs.NodeRenamer     = (*node)(nil)
)

// path returns the path of n's backing file.
func (n *node) path() string {
	return filepath.Join(n.RootData.Path, n.Path(n.Root()))
}

// WrapChild makes the nodes the loopback creates nodes of the lazy
// filesystem.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fs.LoopbackNode), cache: n.cache}
}

// Lookup looks name up in the backing directory, with the size of its
// cached bytes.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	gen := n.cache.syncs.Load()
	ch, errno := n.LoopbackNode.Lookup(ctx, name, out)
	if errno != 0 {
		return nil, errno
	}
	n.cache.overlay(&out.Attr, filepath.Join(n.path(), name), gen)
	return ch, 0
}

// Getattr reports the backing file's attributes with the size of its cached
// bytes.
func (n *node) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if h, ok := fh.(*handle); ok {
		return h.getattr(&out.Attr)
	}
	gen := n.cache.syncs.Load()
	if errno := n.LoopbackNode.Getattr(ctx, fh, out); errno != 0 {
		return errno
	}
	n.cache.overlay(&out.Attr, n.path(), gen)
	return 0
}

// Setattr changes the backing file's attributes; a size change also cuts
// the cached bytes past the new size.
func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if h, ok := fh.(*handle); ok {
		return h.setattr(ctx, in, out)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(n.path(), &st); err != nil {
		return fs.ToErrno(err)
	}
	f := n.cache.acquire(st.Ino, false)
	if f == nil {
		return n.LoopbackNode.Setattr(ctx, fh, in, out)
	}
	defer n.cache.release(f)
	f.mu.Lock()
	defer f.mu.Unlock()
	if errno := n.LoopbackNode.Setattr(ctx, fh, in, out); errno != 0 {
		return errno
	}
	if size, ok := in.GetSize(); ok {
		f.truncate(int64(size))
	}
	out.Size = f.size(out.Size)
	return 0
}

// Statx declines statx(2), so that the kernel falls back to Getattr, which
// knows the cache.
func (n *node) Statx(ctx context.Context, fh fs.FileHandle, flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return syscall.ENOSYS
}

// Open opens the backing file. The cache does its own I/O on it, with
// unaligned buffers, so it is never opened with O_DIRECT.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags&^syscall.O_DIRECT)
	if errno != 0 {
		return nil, 0, errno
	}
	h, errno := n.cache.open(ctx, fh, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return h, fuseFlags, 0
}

// Create creates and opens a backing file, as Open does.
func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	ch, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags&^syscall.O_DIRECT, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	h, errno := n.cache.open(ctx, fh, flags)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	if errno := h.getattr(&out.Attr); errno != 0 {
		h.Release(ctx)
		return nil, nil, 0, errno
	}
	return ch, h, fuseFlags, 0
}

// Tmpfile creates and opens an unnamed backing file, as Open does.
func (n *node) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	ch, fh, fuseFlags, errno := n.LoopbackNode.Tmpfile(ctx, flags&^syscall.O_DIRECT, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	h, errno := n.cache.open(ctx, fh, flags)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	if errno := h.getattr(&out.Attr); errno != 0 {
		h.Release(ctx)
		return nil, nil, 0, errno
	}
	return ch, h, fuseFlags, 0
}

// Link links the backing file of target, reporting the size of its cached
// bytes.
func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	gen := n.cache.syncs.Load()
	ch, errno := n.LoopbackNode.Link(ctx, target, name, out)
	if errno != 0 {
		return nil, errno
	}
	n.cache.overlay(&out.Attr, filepath.Join(n.path(), name), gen)
	return ch, 0
}

// Unlink removes name from the backing directory, and forgets the cached
// bytes of its file if that leaves the file unreachable.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(n.path(), name), &st); err != nil {
		return fs.ToErrno(err)
	}
	if errno := n.LoopbackNode.Unlink(ctx, name); errno != 0 {
		return errno
	}
	n.cache.forgetUnlinked(st.Ino)
	return 0
}

// Rename renames in the backing directory, and forgets the cached bytes of
// a file it replaces if that leaves the file unreachable.
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	var st syscall.Stat_t
	np, ok := newParent.(*node)
	replaces := ok && syscall.Lstat(filepath.Join(np.path(), newName), &st) == nil
	if errno := n.LoopbackNode.Rename(ctx, name, newParent, newName, flags); errno != 0 {
		return errno
	}
	if replaces {
		n.cache.forgetUnlinked(st.Ino)
	}
	return 0
}

// handle is an open file of a lazy filesystem.
type handle struct {
	lf   *fs.LoopbackFile // serves what needs no cache
	fd   int              // lf's descriptor of the backing file
	file *file
}

var (
	_ fs.FileReader    = (*handle)(nil)
	_ fs.FileWriter    = (*handle)(nil)
	_ fs.FileFsyncer   = (*handle)(nil)
	_ fs.FileReleaser  = (*handle)(nil)
	_ fs.FileAllocater = (*handle)(nil)
)

// fsyncDataOnly is FUSE_FSYNC_FDATASYNC: the sync is an fdatasync.
const fsyncDataOnly = 1

// Read reads the backing file with the cached bytes laid over it.
func (h *handle) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f := h.file
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := preadFull(h.fd, buf, off)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	// Past the backing file's end, the file goes on, holes read as zeros,
	// up to the end of the cached bytes.
	if end := f.data.end(); end > off+int64(n) {
		m := int(min(int64(len(buf)), end-off))
		clear(buf[n:m])
		n = m
	}
	f.data.copyTo(buf[:n], off)
	return fuse.ReadResultData(buf[:n]), 0
}

// Write caches data at off.
func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	f := h.file
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.write(h.fd, off, data); err != nil {
		return 0, fs.ToErrno(err)
	}
	return uint32(len(data)), 0
}

// Fsync writes the cached bytes to the backing file and fsyncs it.
func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	f := h.file
	f.mu.Lock()
	defer f.mu.Unlock()
	return fs.ToErrno(f.sync(h.fd, flags&fsyncDataOnly != 0))
}

// Release closes the backing descriptor. The cached bytes stay, unless the
// file has no name and no handle left.
func (h *handle) Release(ctx context.Context) syscall.Errno {
	f := h.file
	f.mu.Lock()
	f.opens--
	f.forgetUnlinked()
	f.mu.Unlock()
	f.cache.release(f)
	return h.lf.Release(ctx)
}

// Allocate runs fallocate on the backing file; punching a hole or zeroing a
// range also zeroes the cached bytes in it.
func (h *handle) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	f := h.file
	f.mu.Lock()
	defer f.mu.Unlock()
	if errno := h.lf.Allocate(ctx, off, size, mode); errno != 0 {
		return errno
	}
	if mode&(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_ZERO_RANGE) != 0 {
		f.data.zero(int64(off), int64(off+size))
	}
	return 0
}

// getattr reports the backing file's attributes with the size of the
// cached bytes.
func (h *handle) getattr(out *fuse.Attr) syscall.Errno {
	f := h.file
	f.mu.RLock()
	defer f.mu.RUnlock()
	var st syscall.Stat_t
	if err := syscall.Fstat(h.fd, &st); err != nil {
		return fs.ToErrno(err)
	}
	out.FromStat(&st)
	out.Size = f.size(out.Size)
	return 0
}

// setattr changes the backing file's attributes; a size change also cuts
// the cached bytes past the new size.
func (h *handle) setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	f := h.file
	f.mu.Lock()
	defer f.mu.Unlock()
	if errno := h.lf.Setattr(ctx, in, out); errno != 0 {
		return errno
	}
	if size, ok := in.GetSize(); ok {
		f.truncate(int64(size))
	}
	out.Size = f.size(out.Size)
	return 0
}

// preadFull reads from fd at off into buf until buf is full or the file
// ends, and returns how many bytes it read.
func preadFull(fd int, buf []byte, off int64) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := unix.Pread(fd, buf[n:], off+int64(n))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}
