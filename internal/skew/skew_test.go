package skew

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// offsetOf returns how far clock is from the wall clock.
func offsetOf(clock func() time.Time) time.Duration {
	return clock().Sub(time.Now().Round(0))
}

// near reports whether offset d is within a second of want.
func near(d, want time.Duration) bool { return (d - want).Abs() < time.Second }

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitOffset polls clock until its offset is near want, and fails if it is
// not within a second (the file is read again after 100 ms).
func waitOffset(t *testing.T, clock func() time.Time, want time.Duration) {
	t.Helper()
	start := time.Now()
	for !near(offsetOf(clock), want) {
		if time.Since(start) > time.Second {
			t.Fatalf("offset %s a second after the change, want %s", offsetOf(clock), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOffsetFollowsTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "offset")
	write(t, path, " 20s\n")
	clock := FromFile(path)
	now := clock()
	if d := offsetOf(clock); !near(d, 20*time.Second) {
		t.Fatalf("offset %s, want 20s", d)
	}
	if strings.Contains(now.String(), "m=") {
		t.Errorf("time %s carries a monotonic reading", now)
	}
	write(t, path, "-7m30s")
	waitOffset(t, clock, -7*time.Minute-30*time.Second)
}

func TestMissingFileMeansNoOffset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "offset")
	clock := FromFile(path)
	if d := offsetOf(clock); !near(d, 0) {
		t.Fatalf("offset %s without a file, want 0", d)
	}
	write(t, path, "1h")
	waitOffset(t, clock, time.Hour)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitOffset(t, clock, 0)
}

func TestBadContentKeepsTheOffset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "offset")
	write(t, path, "10s")
	clock := FromFile(path)
	if d := offsetOf(clock); !near(d, 10*time.Second) {
		t.Fatalf("offset %s, want 10s", d)
	}
	write(t, path, "ten seconds")
	time.Sleep(3 * refresh)
	if d := offsetOf(clock); !near(d, 10*time.Second) {
		t.Fatalf("offset %s after bad content, want the previous 10s", d)
	}
}
