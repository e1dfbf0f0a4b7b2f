package jepsen

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/difuse/difuse/internal/cli"
)

// A node that exits because it found no cluster to join is started again,
// as systemd does with the shipped unit; one that fails otherwise, or that
// the harness kills, is not.
func TestSuperviseRestartsOnlyAJoinFailure(t *testing.T) {
	for _, tc := range []struct {
		code    int
		restart bool
	}{{cli.ExitJoin, true}, {cli.ExitFailure, false}} {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			dir := t.TempDir()
			tried := filepath.Join(dir, "tried")
			// The first run fails with tc.code; a second one runs on.
			script := fmt.Sprintf("if [ -e %[1]s ]; then echo again; exec sleep 60; fi; touch %[1]s; exit %[2]d", tried, tc.code)
			n := &node{argv: []string{"sh", "-c", script}, logPath: filepath.Join(dir, "log")}
			n.mu.Lock()
			err := n.run()
			n.mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			defer n.kill()
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				log, _ := os.ReadFile(n.logPath)
				if string(log) == "again\n" || !n.running() {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			log, _ := os.ReadFile(n.logPath)
			if restarted := string(log) == "again\n"; restarted != tc.restart || n.running() != tc.restart {
				t.Fatalf("exit %d: restarted %v, running %v; want %v", tc.code, restarted, n.running(), tc.restart)
			}
			if !tc.restart {
				return
			}
			n.kill()
			select {
			case <-n.exited():
			case <-time.After(5 * time.Second):
				t.Fatal("a killed node runs on")
			}
		})
	}
}
