package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/difuse/difuse/internal/cli"
)

// mountHelper is difuse-mount called by mount(8) as mount.fuse.difuse (or
// mount.difuse): `SOURCE MOUNTPOINT [-o OPTIONS] [-fnsv]`. SOURCE is the
// gRPC address (or comma-separated addresses) of cluster nodes, or
// "embedded" for a mount with its own node. OPTIONS are difuse-mount's
// flags as name=value (dashes may be underscores: attr_valid=1s,
// write_level=all; dir=, grpc= and http= for -d, -b and -a; log=FILE for
// the mount's log), and mount(8)'s own options, which it ignores. The
// helper starts the mount in the background, waits until it is mounted,
// and exits; with -v it says so, with the mount's process id.
func mountHelper(args []string, stderr io.Writer) int {
	var pos, opts []string
	verbose := false
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-o" && i+1 < len(args):
			opts = append(opts, strings.Split(args[i+1], ",")...)
			i++
		case strings.HasPrefix(a, "-o"):
			opts = append(opts, strings.Split(a[2:], ",")...)
		case a == "-v":
			verbose = true
		case strings.HasPrefix(a, "-"): // -f (fake), -n (no mtab), -s (sloppy)
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		fmt.Fprintln(stderr, "Usage: mount.fuse.difuse SOURCE MOUNTPOINT [-o OPTIONS]\n  SOURCE: node addresses (host:port,...) or \"embedded\"")
		return cli.ExitUsage
	}
	source, mountpoint := pos[0], pos[1]
	var o options
	flags := newFlags(&o, io.Discard)
	var mountArgs []string
	if source != "embedded" {
		mountArgs = append(mountArgs, "-j", source)
	}
	logPath := ""
	for _, opt := range opts {
		name, value, hasValue := strings.Cut(opt, "=")
		flagName := strings.ReplaceAll(name, "_", "-")
		if short, ok := helperAliases[name]; ok {
			flagName = short
		}
		switch {
		case name == "log":
			logPath = value
		case name == "j" || name == "":
		case flags.Lookup(flagName) != nil && hasValue:
			mountArgs = append(mountArgs, "-"+flagName+"="+value)
		case flags.Lookup(flagName) != nil: // a switch, such as allow_other
			mountArgs = append(mountArgs, "-"+flagName)
		}
		// Anything else is mount(8)'s: rw, defaults, _netdev, nofail, ...
	}
	if logPath == "" {
		dir, err := cli.DataDir("logs")
		if err != nil {
			fmt.Fprintln(stderr, "mount.fuse.difuse:", err)
			return cli.ExitDataDir
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			fmt.Fprintln(stderr, "mount.fuse.difuse:", err)
			return cli.ExitDataDir
		}
		abs, _ := filepath.Abs(mountpoint)
		logPath = filepath.Join(dir, "mount"+strings.ReplaceAll(abs, "/", "-")+".log")
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(stderr, "mount.fuse.difuse: log:", err)
		return cli.ExitDataDir
	}
	defer logFile.Close()
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "mount.fuse.difuse:", err)
		return cli.ExitFailure
	}
	cmd := exec.Command(self, append(mountArgs, mountpoint)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// mount(8) runs helpers with a bare PATH; mounting needs fusermount3.
	cmd.Env = append(os.Environ(), "PATH="+os.Getenv("PATH")+":/usr/local/bin:/usr/bin:/bin")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlive mount(8)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(stderr, "mount.fuse.difuse:", err)
		return cli.ExitFailure
	}
	exited := make(chan int, 1)
	go func() {
		cmd.Wait()
		exited <- cmd.ProcessState.ExitCode()
	}()
	for deadline := time.Now().Add(time.Minute); ; {
		select {
		case code := <-exited:
			fmt.Fprintf(stderr, "mount.fuse.difuse: difuse-mount exited %d; its log (%s) ends:\n%s", code, logPath, cli.Tail(logPath, 10))
			return max(code, cli.ExitFailure)
		case <-time.After(50 * time.Millisecond):
		}
		if cli.Mounted(mountpoint) {
			if verbose {
				fmt.Fprintf(stderr, "mount.fuse.difuse: mounted %s (pid %d, log %s)\n", mountpoint, cmd.Process.Pid, logPath)
			}
			return 0
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			fmt.Fprintf(stderr, "mount.fuse.difuse: not mounted after a minute; its log (%s) ends:\n%s", logPath, cli.Tail(logPath, 10))
			return cli.ExitMount
		}
	}
}

// helperAliases name the one-letter flags in mount options.
var helperAliases = map[string]string{"dir": "d", "grpc": "b", "http": "a"}
