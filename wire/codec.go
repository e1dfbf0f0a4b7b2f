package wire

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"runtime/debug"

	flatbuffers "github.com/google/flatbuffers/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// schema is the wire schema compiled into the binary. It is parsed once at
// start; the package's tests prove it parses.
var schema = func() *Schema {
	s, err := loadSchema()
	if err != nil {
		panic(fmt.Sprintf("wire: embedded schema: %v", err))
	}
	return s
}()

// Embedded returns the wire schema compiled into the binary.
func Embedded() *Schema { return schema }

// table is what every generated FlatBuffers table type implements.
type table interface {
	Init(buf []byte, i flatbuffers.UOffsetT)
}

// Codec is the gRPC codec for FlatBuffers messages. Marshal takes a finished
// *flatbuffers.Builder. Unmarshal verifies the buffer against the embedded
// schema, using the Go type's name as the table name, before it initialises
// the table: a malformed buffer is an error wrapping ErrMalformed, and the
// accessors never see it.
type Codec struct{}

// Name is the codec's content subtype.
func (Codec) Name() string { return "flatbuffers" }

// Marshal returns the bytes of a finished builder.
func (Codec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*flatbuffers.Builder)
	if !ok {
		return nil, fmt.Errorf("wire: cannot marshal %T: want *flatbuffers.Builder", v)
	}
	return b.FinishedBytes(), nil
}

// Unmarshal verifies data and points the table v at it. gRPC hands the codec
// a buffer it does not reuse, so v may keep it.
func (Codec) Unmarshal(data []byte, v any) error {
	t, ok := v.(table)
	if !ok {
		return fmt.Errorf("wire: cannot unmarshal into %T", v)
	}
	return Decode(data, t)
}

// Decode verifies buf as the table type of t and, if it is well formed,
// points t at it.
func Decode(buf []byte, t table) error {
	name := reflect.TypeOf(t).Elem().Name()
	if err := schema.Verify(name, buf); err != nil {
		return err
	}
	t.Init(buf, flatbuffers.GetUOffsetT(buf))
	return nil
}

// ServerOptions are the options every difuse gRPC server uses: the
// FlatBuffers codec, and interceptors that turn a handler's panic into an
// Internal error with a log line instead of a crashed node. A nil log
// discards those lines.
func ServerOptions(log *slog.Logger) []grpc.ServerOption {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return []grpc.ServerOption{
		grpc.ForceServerCodec(Codec{}),
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.MaxConcurrentStreams(MaxStreams),
		grpc.MaxHeaderListSize(maxHeaderBytes),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
			defer recoverRPC(log, info.FullMethod, &err)
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
			defer recoverRPC(log, info.FullMethod, &err)
			return h(srv, ss)
		}),
	}
}

func recoverRPC(log *slog.Logger, method string, err *error) {
	if r := recover(); r != nil {
		log.Error("rpc handler panicked", "method", method, "panic", r, "stack", string(debug.Stack()))
		*err = status.Errorf(codes.Internal, "%s: internal error", method)
	}
}

// MaxMessageBytes bounds one gRPC message either way. The services keep
// their messages well below it: a transaction-log batch carries at most a
// few MiB, and blocks stream in pieces.
const MaxMessageBytes = 16 << 20

// MaxStreams bounds the calls one connection has open at once; a client
// past it waits for one to end. It bounds what one connection can make a
// server hold in messages being received.
const MaxStreams = 128

// maxHeaderBytes bounds a call's metadata, which difuse keeps small.
const maxHeaderBytes = 64 << 10

// DialOptions are the options every difuse gRPC client uses: the
// FlatBuffers codec over creds, a member's TLS (see identity; tests of one
// service alone use insecure.NewCredentials).
func DialOptions(creds credentials.TransportCredentials) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.ForceCodec(Codec{}), grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes)),
		grpc.WithTransportCredentials(creds),
	}
}
