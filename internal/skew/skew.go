// Package skew offsets a host's wall clock by a duration read from a file,
// so that a test running several nodes on one machine can give each its own
// clock, and change it while they run.
package skew

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"
)

// refresh is how long an offset read from the file is used before the file
// is read again.
const refresh = 100 * time.Millisecond

// FromFile returns a clock that reads the wall clock plus the offset the
// file at path holds: a duration such as "-7m30s" or "20s", surrounding
// white space ignored. A missing file means no offset; a file that cannot be
// read or parsed keeps the offset last read (none at first). The file is
// read at most every 100 ms. The times carry no monotonic reading, so
// comparing and subtracting them uses the skewed wall time. The clock is
// safe for concurrent use.
func FromFile(path string) func() time.Time {
	c := &clock{path: path}
	return c.now
}

// clock caches the offset of one file.
type clock struct {
	path   string
	mu     sync.Mutex
	offset time.Duration
	read   time.Time // when the file was last read; zero before the first
}

func (c *clock) now() time.Time {
	now := time.Now()
	c.mu.Lock()
	if c.read.IsZero() || now.Sub(c.read) >= refresh {
		c.read = now
		c.offset = c.load()
	}
	offset := c.offset
	c.mu.Unlock()
	return now.Add(offset).Round(0)
}

// load returns the file's offset: none if it is missing, the last one read
// if it is unreadable or bad. c.mu must be held.
func (c *clock) load() time.Duration {
	b, err := os.ReadFile(c.path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0
	}
	if err != nil {
		return c.offset
	}
	d, err := time.ParseDuration(strings.TrimSpace(string(b)))
	if err != nil {
		return c.offset
	}
	return d
}
