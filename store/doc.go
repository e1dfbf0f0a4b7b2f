// Package store defines a node's local persistence as the packages above it
// see it: the errors they branch on, the Writer of an atomic update, Mem (an
// in-memory ordered key-value store for tests) and, in storetest, the suite
// every implementation passes. The real store, one Badger database in the
// node's data directory, is store/badgerdb, which only the node and the
// commands import, so that a mount links no database.
//
// A store is an ordered key-value map with atomic multi-key updates, prefix
// scans and an explicit Sync for durability. It does not know what its keys
// mean: the packages above it choose their own key prefixes and declare the
// small interfaces they need, which badgerdb.DB and Mem satisfy.
package store
