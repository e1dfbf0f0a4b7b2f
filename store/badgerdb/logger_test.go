package badgerdb

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// formatCounter counts how often it is formatted.
type formatCounter struct{ n *int }

func (c formatCounter) String() string { *c.n++; return "x" }

func TestBadgerLoggerFormatsOnlyKeptLevels(t *testing.T) {
	var buf bytes.Buffer
	l := badgerLogger{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	formatted := 0
	arg := formatCounter{&formatted}
	l.Debugf("write %v\n", arg)
	l.Infof("compaction %v\n", arg)
	if formatted != 0 || buf.Len() != 0 {
		t.Fatalf("debug and info lines at warn level: formatted %d times, logged %q", formatted, buf.String())
	}
	l.Warningf("slow %v\n", arg)
	l.Errorf("broken %v\n", arg)
	out := buf.String()
	if formatted != 2 || !strings.Contains(out, `level=WARN msg="slow x" component=badger`) || !strings.Contains(out, `level=ERROR msg="broken x"`) {
		t.Fatalf("warn and error lines: formatted %d times, logged %q", formatted, out)
	}
}
