package inode

import (
	"context"
	"fmt"
	"time"
)

// A commit of a large file may take long, and should, as long as it moves:
// a deadline on the whole would fail a slow but sound flush. WithStall
// bounds instead the time between two steps of progress (a block stored,
// a block read, a transaction written).

type stallKey struct{}

// stall is the timer a context made by WithStall carries.
type stall struct {
	t *time.Timer
	d time.Duration
}

// WithStall returns a context that ends when no progress has been made
// under it for d, with a cause that says so (context.Cause), and the
// function that ends it sooner.
func WithStall(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	s := &stall{d: d}
	s.t = time.AfterFunc(d, func() { cancel(fmt.Errorf("no progress for %s", d)) })
	return context.WithValue(ctx, stallKey{}, s), func() {
		s.t.Stop()
		cancel(context.Canceled)
	}
}

// progressed tells ctx's stall timer, if it has one, that a step was made.
func progressed(ctx context.Context) {
	if s, ok := ctx.Value(stallKey{}).(*stall); ok {
		s.t.Reset(s.d)
	}
}
