// Package fsnode is the FUSE layer on bazil.org/fuse: directory and file
// nodes, open handles that buffer writes, read-ahead, the block cache, the
// kernel's attribute and entry caching, and the one translation of errors to
// errno.
//
// It knows nothing of Chord or gRPC: it talks to the filesystem model through
// the small interfaces it declares.
package fsnode
