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

// MaxCommit bounds a commit however it progresses: garbage collection
// frees a block that no inode refers to once it has gone unused for its
// grace time (an hour by default), so a commit must refer to the blocks it
// stored well within that (docs/gc.md).
const MaxCommit = 30 * time.Minute

// WithStall returns a context that ends when no progress has been made
// under it for d, or after MaxCommit in all, with a cause that says so
// (context.Cause), and the function that ends it sooner.
func WithStall(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	ctx, stop := context.WithTimeoutCause(ctx, MaxCommit, fmt.Errorf("a commit over %s", MaxCommit))
	s := &stall{d: d}
	s.t = time.AfterFunc(d, func() { cancel(fmt.Errorf("no progress for %s", d)) })
	return context.WithValue(ctx, stallKey{}, s), func() {
		s.t.Stop()
		stop()
		cancel(context.Canceled)
	}
}

// progressed tells ctx's stall timer, if it has one, that a step was made.
func progressed(ctx context.Context) {
	if s, ok := ctx.Value(stallKey{}).(*stall); ok {
		s.t.Reset(s.d)
	}
}
