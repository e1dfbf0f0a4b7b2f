package cli

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
)

// Mounted reports whether a filesystem is mounted on mountpoint.
func Mounted(mountpoint string) bool {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return false
	}
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return false
	}
	defer f.Close()
	// Fields escape spaces and the like as octal (\040).
	escaped := strings.NewReplacer(" ", `\040`, "\t", `\011`, "\n", `\012`, `\`, `\134`).Replace(abs)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 1 && fields[1] == escaped {
			return true
		}
	}
	return false
}

// Tail returns the last n lines of a file, ending in a newline (nothing if
// it cannot be read).
func Tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.SplitAfter(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "") + "\n"
}
