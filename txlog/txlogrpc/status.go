package txlogrpc

import (
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/difuse/difuse/store"
	"github.com/difuse/difuse/txlog"
)

// errorDomain marks the ErrorInfo of a txlog error.
const errorDomain = "txlog.difuse"

// errorKinds names the txlog errors that cross the network, with the status
// code each travels under.
var errorKinds = []struct {
	err    error
	reason string
	code   codes.Code
}{
	{txlog.ErrConflict, "CONFLICT", codes.FailedPrecondition},
	{txlog.ErrNotFound, "NOT_FOUND", codes.NotFound},
	{txlog.ErrTakeover, "TAKEOVER", codes.Unavailable}, // these two before the ErrUnavailable they wrap
	{txlog.ErrCommittedShort, "COMMITTED_SHORT", codes.Unavailable},
	{txlog.ErrUnavailable, "UNAVAILABLE", codes.Unavailable},
	{txlog.ErrBadRequest, "BAD_REQUEST", codes.InvalidArgument},
	{txlog.ErrNotLeader, "NOT_LEADER", codes.Aborted},
	{txlog.ErrStaleBallot, "STALE_BALLOT", codes.Aborted},
	{txlog.ErrCompacted, "COMPACTED", codes.OutOfRange},
	{txlog.ErrNoPartition, "NO_PARTITION", codes.NotFound},
	{store.ErrNoSpace, "NO_SPACE", codes.ResourceExhausted},
}

// ToStatus turns a handler's error into a gRPC status error. A txlog error
// carries an ErrorInfo naming it; any other error becomes Unavailable
// without one, which the caller treats as a failure to reach the host.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	for _, k := range errorKinds {
		if errors.Is(err, k.err) {
			st, derr := status.New(k.code, err.Error()).WithDetails(&errdetails.ErrorInfo{Reason: k.reason, Domain: errorDomain})
			if derr != nil {
				return status.Error(k.code, err.Error())
			}
			return st.Err()
		}
	}
	return status.Error(codes.Unavailable, err.Error())
}

// remoteError is a txlog error that came over the network: its text is the
// remote one, and it wraps the txlog error it named.
type remoteError struct {
	msg  string
	kind error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.kind }

// FromStatus turns the error of a call to addr back into the txlog error
// the handler returned; an error that names none is returned wrapped with
// the address, as a transport error.
func FromStatus(addr string, err error) error {
	if err == nil {
		return nil
	}
	st := status.Convert(err)
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.Domain != errorDomain {
			continue
		}
		for _, k := range errorKinds {
			if info.Reason == k.reason {
				return &remoteError{msg: st.Message(), kind: k.err}
			}
		}
	}
	return fmt.Errorf("txlog: %s: %w", addr, err)
}
