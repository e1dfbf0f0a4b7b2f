// Package wire owns difuse's wire format: the FlatBuffers schema (*.fbs),
// the gRPC codec that carries FlatBuffers instead of protobuf, and the
// verifier that checks every received buffer before any field is read.
//
// The generated accessors in package fb trust their buffer, so a malformed
// message could make them panic. Codec.Unmarshal and Decode therefore verify
// each buffer against the schema embedded in the binary (the same files flatc
// compiled), which makes a truncated or corrupted message an error wrapping
// ErrMalformed. The verifier handles the schema subset the project uses:
// tables, structs, enums, strings and vectors; unions and explicit field ids
// are rejected when the schema is parsed.
//
// Package wire checks structure only. What a field means (a hash of the right
// length, a known consistency level) is checked by the package that uses it.
// It knows nothing of rings, logs, blocks or files.
package wire
