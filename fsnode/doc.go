// Package fsnode is the FUSE layer on bazil.org/fuse: one node per inode
// the kernel knows, whose open handles share a writer that buffers writes
// until flush, fsync, close or a size limit; the kernel's attribute and
// entry caching with short timeouts; a deadline on every operation; and
// the one translation of errors to errno (EIO with a log line saying why).
//
// It knows nothing of Chord or gRPC: it drives package inode.
package fsnode
