// Package fb holds the Go code flatc generates from the wire schema in
// ../*.fbs: table accessors, builders and gRPC service stubs. Do not edit the
// generated files; change the schema and run scripts/gen.sh.
//
// The accessors trust their buffer: read a table only after package wire has
// verified it (the gRPC codec in package wire does so for every message).
package fb
