package store

import "errors"

// Errors callers branch on. Every error a store returns wraps one of these or
// the underlying I/O error, with the operation and directory for context.
var (
	// ErrNotFound is returned by Get for a key that is not stored.
	ErrNotFound = errors.New("key not found")
	// ErrNoDir means the data directory, or the directory that should hold
	// it, does not exist or is not a directory.
	ErrNoDir = errors.New("data directory missing")
	// ErrLocked means another process has the data directory open.
	ErrLocked = errors.New("data directory in use by another process")
	// ErrNoSpace means the data directory's file system is full, or has less
	// free space than the store keeps in reserve.
	ErrNoSpace = errors.New("no space left in data directory")
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("store closed")
)

// Writer receives the writes of one atomic update. It keeps the slices it
// is given until the update returns; callers must not change them before.
type Writer interface {
	Set(key, val []byte) error
	Delete(key []byte) error
}
