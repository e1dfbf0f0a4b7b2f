package node

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/difuse/difuse/nodestatus"
)

// recentEntries is how many warnings and errors a node keeps for its
// status.
const recentEntries = 20

// recentLog keeps the latest warnings and errors a node logged.
type recentLog struct {
	mu      sync.Mutex
	entries []nodestatus.LogEntry // oldest first, at most recentEntries
}

// list returns the entries, oldest first.
func (r *recentLog) list() []nodestatus.LogEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.entries)
}

func (r *recentLog) add(e nodestatus.LogEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.entries) == recentEntries {
		r.entries = slices.Delete(r.entries, 0, 1)
	}
	r.entries = append(r.entries, e)
}

// recentHandler passes records on to the next handler and keeps those of
// level Warn and above in a recentLog, as one line of text each.
type recentHandler struct {
	next  slog.Handler
	log   *recentLog
	attrs string // the handler's own attributes, formatted
	group string // prefix of attribute keys
}

func (h recentHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || h.next.Enabled(ctx, l)
}

func (h recentHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		var b strings.Builder
		b.WriteString(r.Message)
		b.WriteString(h.attrs)
		r.Attrs(func(a slog.Attr) bool {
			writeAttr(&b, h.group, a)
			return true
		})
		h.log.add(nodestatus.LogEntry{Time: r.Time, Level: r.Level.String(), Message: b.String()})
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h recentHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range attrs {
		writeAttr(&b, h.group, a)
	}
	return recentHandler{next: h.next.WithAttrs(attrs), log: h.log, attrs: b.String(), group: h.group}
}

func (h recentHandler) WithGroup(name string) slog.Handler {
	return recentHandler{next: h.next.WithGroup(name), log: h.log, attrs: h.attrs, group: h.group + name + "."}
}

// writeAttr appends " key=value" to b.
func writeAttr(b *strings.Builder, group string, a slog.Attr) {
	b.WriteString(" ")
	b.WriteString(group)
	b.WriteString(a.Key)
	b.WriteString("=")
	b.WriteString(a.Value.Resolve().String())
}
