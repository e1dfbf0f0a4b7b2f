// Package node composes one difused: it opens the local store, serves the
// node-to-node (Peer) and client-to-node (Client) gRPC services and the HTTP
// interface, and shuts them down in order.
//
// It owns the node's identity (a random id chosen on first start and kept in
// the store) and its status. The distributed parts (ring, transaction logs,
// blocks) live in their own packages; node only wires them to the network.
package node
