package cli

import (
	"strings"
	"testing"
	"time"
)

// On a pipe, progress is plain lines at most every interval, with counts,
// rate and the time left; a terminal gets a bar redrawn in place.
func TestProgress(t *testing.T) {
	var out strings.Builder
	p := NewProgress(&out, "blocks", "blocks")
	now := p.start
	p.now = func() time.Time { return now }
	now = now.Add(10 * time.Second)
	p.Update(100, 400)
	p.Update(150, 400) // too soon: not drawn
	now = now.Add(10 * time.Second)
	p.Update(200, 400)
	p.Finish()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{
		"blocks 100/400 blocks (25%), 10/s, ETA 30s",
		"blocks 200/400 blocks (50%), 10/s, ETA 20s", // Finish repeats no line
	}
	if strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Fatalf("lines:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}

	out.Reset()
	p = NewProgress(&out, "walk", "inodes")
	p.tty, p.now = true, func() time.Time { return now }
	p.start = now.Add(-2 * time.Second)
	p.Update(50, 0)
	if got := out.String(); got != "\r\033[Kwalk 50 inodes, 25/s, 2s" {
		t.Fatalf("terminal line %q", got)
	}
	p.total = 100
	if got := p.line(); !strings.Contains(got, "[###############...............] 50/100 inodes (50%)") || !strings.Contains(got, "ETA 2s") {
		t.Fatalf("terminal bar %q", got)
	}
}
