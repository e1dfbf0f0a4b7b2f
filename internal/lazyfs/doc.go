// Package lazyfs is a FUSE filesystem for durability tests, in the manner of
// LazyFS for Jepsen: it loses, on a simulated power cut, whatever its users
// wrote but never synced.
//
// A lazy filesystem passes everything through to a backing directory on the
// local disk except file data. Bytes written to a file, by write(2) or through
// a shared writable mmap (whose dirty pages the kernel sends as FUSE writes),
// stay in the memory of the filesystem process, per file, and reach the
// backing file only when the file is synced: fsync(2), fdatasync(2) and
// msync(MS_SYNC) write the file's cached bytes to the backing file and fsync
// it. Closing a file persists nothing. Reads lay the cached bytes over the
// backing file's, and attributes report the size including them.
//
// Metadata operations (create, mkdir, unlink, rename, link, symlink, chmod,
// truncate, fallocate, extended attributes) reach the backing directory at
// once. A truncate also cuts the cached bytes past the new size, and a
// fallocate that punches a hole or zeroes a range zeroes the cached bytes in
// it.
//
// [FS.Crash] simulates the power cut: it aborts the FUSE connection, so that
// the kernel drops its own page cache without writing it back, and forgets
// every cached byte. Mounting the backing directory again shows what
// survived. [FS.Unmount] instead writes everything back, like a clean
// shutdown.
//
// The cache is keyed by the backing files' inode numbers, so it follows a
// file across renames and is shared by its hard links and all its open
// handles; the backing directory must therefore lie on a single filesystem.
// A file's cached bytes are dropped once it has neither a name nor an open
// handle left, since nothing could sync them any more.
//
// Limitations: mtimes and block counts change only when data reaches a
// backing file; statx(2) is not served (the kernel falls back to plain
// getattr, without birth times); copy_file_range(2) falls back to reads and
// writes through the mount; ioctls are refused; SEEK_DATA and SEEK_HOLE treat
// the whole file as data. Crash needs root, to write the connection's abort
// file.
//
// A process must not mmap files of a lazy filesystem that it serves itself:
// a thread blocked in a page fault on the mount holds its Go scheduler slot
// and cannot be preempted, so the server may starve or a stop-the-world
// garbage collection may deadlock. Serve the filesystem from another process
// than the one under test.
package lazyfs
