// Package nodestatus holds what a node reports about itself (Status, with
// its ring, store, blocks, healing and garbage collection parts) and the
// FlatBuffers encodings of it, shared by the node that fills it in, the
// client that asks for it and the commands that print it. It holds data
// only: it imports no package that does a node's work.
package nodestatus
