package node

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// The node keeps its latest warnings and errors, with their attributes,
// however its own log is filtered, and only the latest recentEntries.
func TestRecentLog(t *testing.T) {
	var out strings.Builder
	r := &recentLog{}
	log := slog.New(recentHandler{next: slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelError}), log: r})
	log.Info("not kept")
	log.With("component", "heal").WithGroup("peer").Warn("peer gone", "addr", "10.0.0.1:4600")
	if got := r.list(); len(got) != 1 || got[0].Message != "peer gone component=heal peer.addr=10.0.0.1:4600" || got[0].Level != "WARN" {
		t.Fatalf("kept %+v", got)
	}
	if out.Len() != 0 {
		t.Errorf("a warning reached a log that wants errors only: %q", out.String())
	}
	for i := range recentEntries + 5 {
		log.Error(fmt.Sprint("error ", i))
	}
	got := r.list()
	if len(got) != recentEntries || got[0].Message != "error 5" || got[len(got)-1].Message != fmt.Sprint("error ", recentEntries+4) {
		t.Fatalf("kept %d entries, from %q to %q", len(got), got[0].Message, got[len(got)-1].Message)
	}
	if !strings.Contains(out.String(), "error 0") {
		t.Error("errors did not reach the node's log")
	}
}
