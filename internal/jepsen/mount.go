package jepsen

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/difuse/difuse/internal/cli"
)

// mount is a difuse-mount process, in the root namespace, using the
// cluster through every node.
type mount struct {
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// mountDir returns where a run in dir mounts its i-th mount.
func mountDir(dir string, i int) string { return filepath.Join(dir, fmt.Sprintf("mnt%d", i)) }

// startMount mounts the cluster on dir and waits until it is mounted; the
// i-th mount lists the members starting from the i-th.
func startMount(ctx context.Context, c *cluster, bin, dir string, i int) (*mount, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var addrs []string
	members := c.members()
	for k := range members {
		addrs = append(addrs, c.grpcAddr(members[(i+k)%len(members)]))
	}
	logPath := dir + ".log"
	log, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	// A commit that makes no progress fails after 30 s rather than 2 min, so
	// that a fault leaves an unknown outcome rather than a stalled client.
	cmd := exec.Command(filepath.Join(bin, "difuse-mount"), "-j", strings.Join(addrs, ","), "-token-file", c.tokenPath(),
		"-d", dir+".id", "-stall-timeout", "30s", dir)
	cmd.Stdout, cmd.Stderr = log, log
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	m := &mount{dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); log.Close(); close(m.done) }()
	for deadline := time.Now().Add(time.Minute); !cli.Mounted(dir); time.Sleep(50 * time.Millisecond) {
		select {
		case <-m.done:
			return nil, fmt.Errorf("difuse-mount exited; its log ends:\n%s", cli.Tail(logPath, 20))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			m.stop()
			return nil, fmt.Errorf("not mounted after a minute; its log ends:\n%s", cli.Tail(logPath, 20))
		}
	}
	return m, nil
}

// stop unmounts: SIGTERM, then a lazy unmount and SIGKILL if it hangs.
func (m *mount) stop() {
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		exec.Command("fusermount3", "-uz", m.dir).Run()
		m.cmd.Process.Kill()
		<-m.done
	}
	if cli.Mounted(m.dir) {
		exec.Command("fusermount3", "-uz", m.dir).Run()
	}
}
