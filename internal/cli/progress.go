package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Progress shows how far long work has got: on a terminal a bar redrawn
// in place with the rate and, when the total is known, the time left; on
// anything else a plain line every few seconds. It is safe for concurrent
// use.
type Progress struct {
	w        io.Writer
	tty      bool
	label    string
	unit     string
	mu       sync.Mutex
	start    time.Time
	last     time.Time
	done     int64
	total    int64
	now      func() time.Time
	interval time.Duration
	drawn    int64 // done when last drawn, -1 before
}

// NewProgress returns a Progress writing to w that counts in unit
// ("inodes", "blocks"); it draws a bar if w is a terminal.
func NewProgress(w io.Writer, label, unit string) *Progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	interval := 5 * time.Second
	if tty {
		interval = 200 * time.Millisecond
	}
	now := time.Now()
	return &Progress{w: w, tty: tty, label: label, unit: unit, start: now, now: time.Now, interval: interval, drawn: -1}
}

// Update sets how much is done out of total (0: unknown) and redraws if it
// is time to.
func (p *Progress) Update(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done, p.total = done, total
	if now := p.now(); now.Sub(p.last) >= p.interval {
		p.last = now
		p.draw(false)
	}
}

// Finish draws the final state and ends the line.
func (p *Progress) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.draw(true)
}

// line returns the progress as text: the bar (on a terminal, with a known
// total), the counts, the rate and the time left. p.mu must be held.
func (p *Progress) line() string {
	elapsed := p.now().Sub(p.start)
	rate := 0.0
	if elapsed > 0 {
		rate = float64(p.done) / elapsed.Seconds()
	}
	var b strings.Builder
	b.WriteString(p.label)
	if p.total > 0 {
		frac := min(float64(p.done)/float64(p.total), 1)
		if p.tty {
			const width = 30
			full := int(frac * width)
			fmt.Fprintf(&b, " [%s%s]", strings.Repeat("#", full), strings.Repeat(".", width-full))
		}
		fmt.Fprintf(&b, " %d/%d %s (%.0f%%)", p.done, p.total, p.unit, 100*frac)
	} else {
		fmt.Fprintf(&b, " %d %s", p.done, p.unit)
	}
	fmt.Fprintf(&b, ", %.0f/s", rate)
	if p.total > 0 && rate > 0 && p.done < p.total {
		left := time.Duration(float64(p.total-p.done) / rate * float64(time.Second))
		fmt.Fprintf(&b, ", ETA %s", left.Round(time.Second))
	} else {
		fmt.Fprintf(&b, ", %s", elapsed.Round(time.Second))
	}
	return b.String()
}

func (p *Progress) draw(final bool) {
	line := p.line()
	switch {
	case p.tty && final:
		fmt.Fprintf(p.w, "\r\033[K%s\n", line)
	case p.tty:
		fmt.Fprintf(p.w, "\r\033[K%s", line)
	case p.done != p.drawn:
		fmt.Fprintln(p.w, line)
	}
	p.drawn = p.done
}
