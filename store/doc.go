// Package store owns a node's local persistence: one Badger database in the
// node's data directory, held under an exclusive lock, with memory sized so
// that several nodes and a mount share a small machine. DB is the real store
// and Mem its in-memory twin; both pass the suite in storetest.
//
// The store is an ordered key-value map with atomic multi-key updates,
// prefix scans and an explicit Sync for durability. It does not know what
// its keys mean: the packages above it choose their own key prefixes and
// declare the small interfaces they need, which DB and Mem satisfy.
package store
