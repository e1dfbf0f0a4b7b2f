package jepsen

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// runsDir holds a record of every run in progress, so that a run can clear
// away what a killed one left behind. Its nodes and mounts die with it
// (they are started with a parent-death signal), but its namespaces,
// bridge and mount points stay.
const runsDir = "/run/difuse-jepsen"

// runRecord names what a run made.
type runRecord struct {
	PID    int
	Prefix string   // of its namespaces and links
	Nodes  int      // namespaces Prefix-0 to Prefix-(Nodes-1)
	Mounts []string // mount points
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

// clear unmounts the run's mounts, kills whatever runs in its namespaces
// and deletes them and its bridge.
func (r runRecord) clear() {
	for _, m := range r.Mounts {
		exec.Command("fusermount3", "-uz", m).Run()
	}
	w := &network{prefix: r.Prefix, bridge: r.Prefix + "br"}
	for i := range r.Nodes {
		out, _ := exec.Command("ip", "netns", "pids", w.ns(i)).Output()
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		ip("netns", "del", w.ns(i))
	}
	ip("link", "del", w.bridge)
}

// dieWithParent makes a child process get SIGKILL when the harness dies.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
