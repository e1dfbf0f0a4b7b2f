package jepsen

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// runsDir holds a record of every run in progress, so that a run can clear
// away what a killed one left behind. Its nodes and mounts die with it
// (they are started with a parent-death signal), but its namespaces,
// bridge and mounts (the nodes' lazy disks, the clients' mounts) stay.
const runsDir = "/run/difuse-jepsen"

// runRecord names what a run made.
type runRecord struct {
	PID    int
	Prefix string // of its namespaces and links
	Dir    string // under which it mounts everything
}

func (r runRecord) path() string { return filepath.Join(runsDir, r.Prefix+".json") }

// save writes the record.
func (r runRecord) save() error {
	if err := os.MkdirAll(runsDir, 0o755); err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return os.WriteFile(r.path(), b, 0o644)
}

// remove forgets the record of a run that cleaned up after itself.
func (r runRecord) remove() { os.Remove(r.path()) }

// sweepLeftovers clears away what runs whose process is gone left behind.
func sweepLeftovers(log *slog.Logger) {
	files, _ := filepath.Glob(filepath.Join(runsDir, "*.json"))
	for _, f := range files {
		var r runRecord
		b, err := os.ReadFile(f)
		if err == nil {
			err = json.Unmarshal(b, &r)
		}
		if err != nil || r.Prefix == "" {
			log.Warn("jepsen: unreadable run record", "file", f, "err", err)
			continue
		}
		if r.PID != os.Getpid() && alive(r.PID) {
			continue
		}
		log.Info("jepsen: clearing what a dead run left", "pid", r.PID, "prefix", r.Prefix)
		r.clear()
		os.Remove(f)
	}
}

// alive reports whether a process pid exists.
func alive(pid int) bool {
	return pid > 0 && !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// clear unmounts everything under the run's directory, deepest first and
// lazily (a dead FUSE server's mount cannot be unmounted otherwise), kills
// whatever runs in its namespaces and deletes them and its bridge.
func (r runRecord) clear() {
	mounts := mountsUnder(r.Dir)
	for i := len(mounts) - 1; i >= 0; i-- {
		syscall.Unmount(mounts[i], syscall.MNT_DETACH)
	}
	clearNetwork(r.Prefix)
}

// mountsUnder lists the mount points at or under dir, in the order
// /proc/self/mounts gives them (parents before children).
func mountsUnder(dir string) []string {
	if dir == "" {
		return nil
	}
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		// Octal escapes stand for spaces and the like in mount points.
		p := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(f[1])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			out = append(out, p)
		}
	}
	return out
}

// dieWithParent makes a child process get SIGKILL when the harness dies.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
