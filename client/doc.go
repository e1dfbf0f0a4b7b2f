// Package client is the Go client of a difuse cluster's gRPC services, used
// by the mount, the CLI and other nodes. A Conn speaks to one node: status,
// ping, key-value reads and writes (Get, Put, Delete, History),
// transaction-log requests (Txn), blocks, and the admin calls (Collect,
// Leave). A Cluster speaks to all of them: it learns the ring's membership
// from the nodes' status and keeps it in a ring.Cache, sends each request
// to the node that leads its key (which forwards it when the cache is
// stale), and fails over to the next node when one cannot be reached.
//
// The types of a node's status are package nodestatus's; the client links
// none of the server's packages (healing, garbage collection, the node, the
// database).
package client
