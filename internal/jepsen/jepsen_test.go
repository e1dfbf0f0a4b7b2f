package jepsen

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/difuse/difuse/internal/proctest"
)

// runFor runs the harness with cfg, from binaries built for the test.
func runFor(t *testing.T, cfg Config) Summary {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip(8): the test script installs iproute2")
	}
	cfg.Bin = filepath.Dir(proctest.Binary(t, "difused"))
	cfg.Dir = t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Duration+10*time.Minute)
	defer cancel()
	sum, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("seed %d: %v", sum.Seed, err)
	}
	t.Log(sum)
	if sum.Results != "" && cfg.PlantedBug == "" {
		// Keep the evidence past the test's temporary directory.
		keep := filepath.Join(os.TempDir(), fmt.Sprintf("difuse-jepsen-%d-%d", sum.Seed, time.Now().Unix()))
		if out, err := exec.Command("cp", "-a", cfg.Dir, keep).CombinedOutput(); err != nil {
			t.Logf("keeping the evidence: %v: %s", err, out)
		}
		sum.Results = filepath.Join(keep, "results")
	}
	return sum
}

// The real system under a short seeded schedule that includes a join, a
// graceful leave, a node's power loss, a clock jump, a power cut of the
// whole cluster and a node lost for good and replaced: every register
// history is linearizable, no acknowledged write or append is lost, the
// weak reads return committed values, and the filesystem's history and
// invariants hold.
func TestShortSchedule(t *testing.T) {
	sum := runFor(t, Config{Seed: 20261126, Duration: 3 * time.Minute,
		Cover: []string{"join", "leave", "power-loss", "clock", "power-cut", "replace"}})
	if sum.Bad() {
		t.Errorf("%s\nlost: %v\nfilesystem: %v\nevidence in %s", sum, sum.Lost, sum.FSViolations, sum.Results)
	}
	if sum.OK < 100 || sum.Faults < 5 {
		t.Errorf("too little happened to mean anything: %s", sum)
	}
}

// With a bug planted in the logs (replicas answer reads from their own
// copies, which go stale behind a partition), the harness reports a
// violation.
func TestPlantedBug(t *testing.T) {
	sum := runFor(t, Config{Seed: 7, Duration: time.Minute, Keys: 2, Mounts: -1, PlantedBug: "local-reads",
		Faults: []string{"partition-majority", "isolate-leader"}})
	checkCaught(t, sum)
}

// With a bug planted in the ballots (replicas forget what they promised,
// so a deposed leader still gets its entries accepted), partitions with a
// bridge between the hot set's leader and its next replica, and the same
// between some of the 16 registers' replicas, make two leaders commit;
// the harness reports it. Faults hold 12 s, so that the two leaders
// overlap for most of each (the second takes over a few seconds in). A
// replica that knows an entry is committed refuses to cut it, which
// leaves only a race to lose, so a schedule may miss it (docs/jepsen.md):
// the test runs up to five schedules, each with a fresh cluster and
// seed, and fails if none reports the bug.
func TestPlantedBallotBug(t *testing.T) {
	var sum Summary
	for _, seed := range []uint64{15, 17, 16, 18, 19} {
		sum = runFor(t, Config{Seed: seed, Duration: time.Minute, Keys: 16, KeyLife: 10 * time.Minute, Clients: 24, Mounts: -1,
			Hold: 12 * time.Second, Quiet: 3 * time.Second,
			PlantedBug: "forget-promises", Faults: []string{"partition-bridge"}})
		if sum.Violations > 0 || len(sum.Lost) > 0 {
			break
		}
		t.Logf("seed %d did not catch it; the next one", seed)
	}
	checkCaught(t, sum)
}

// checkCaught fails the test unless the run reported the planted bug.
func checkCaught(t *testing.T, sum Summary) {
	t.Helper()
	if sum.Violations == 0 && len(sum.Lost) == 0 {
		t.Errorf("the planted bug went unnoticed: %s", sum)
	}
	if sum.Results == "" {
		t.Error("no evidence kept")
	}
}

// A run that was killed leaves its namespaces and bridge behind; the next
// run clears them away.
func TestSweepLeftovers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip(8): the test script installs iproute2")
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	rec := runRecord{PID: dead.Process.Pid, Prefix: "djt" + fmt.Sprint(os.Getpid()%1000), Dir: t.TempDir()}
	w := &network{prefix: rec.Prefix}
	// A mount under the run's directory, as a node's disk or a client's
	// mount would be.
	mnt := filepath.Join(rec.Dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(t.TempDir(), mnt, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	if err := ip("netns", "add", w.ns(0)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ip("netns", "del", w.ns(0)) })
	if err := ip("link", "add", rec.Prefix+"br", "type", "bridge"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ip("link", "del", rec.Prefix+"br") })
	if err := rec.save(); err != nil {
		t.Fatal(err)
	}
	sweepLeftovers(slog.New(slog.DiscardHandler))
	if _, err := os.Stat(filepath.Join("/run/netns", w.ns(0))); err == nil {
		t.Error("the dead run's namespace is still there")
	}
	if ip("link", "show", rec.Prefix+"br") == nil {
		t.Error("the dead run's bridge is still there")
	}
	if _, err := os.Stat(rec.path()); err == nil {
		t.Error("the dead run's record is still there")
	}
	if m := mountsUnder(rec.Dir); len(m) > 0 {
		t.Errorf("the dead run's mounts are still there: %v", m)
	}
}
