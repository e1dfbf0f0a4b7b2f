// Package badgerdb is a node's local database: one Badger database in the
// node's data directory, held under an exclusive lock, with memory sized so
// that several nodes and a mount share a small machine. It satisfies the
// contract of package store (its errors, Writer and the storetest suite).
//
// Only the node and the commands import it; the packages built on the
// store declare the small interfaces they need instead.
package badgerdb
