// Package client is the Go client of a difuse node's gRPC services, used by
// the CLI, other nodes and (later) the mount, and the home of the types those
// services exchange (NodeInfo, Status) with their FlatBuffers encodings. It
// reads and writes the key-value store (Get, Put, Delete, History) and runs
// transaction-log requests (Txn).
//
// It speaks to one node at a time, which forwards each request to its
// partition's leader; it does not route by key or hold a view of the ring.
package client
