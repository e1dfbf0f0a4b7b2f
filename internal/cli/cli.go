// Package cli holds what the commands share: the default data directory,
// the logger their flags describe, and their exit codes (node.ExitCode maps
// a node's errors to them).
package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// DataDir returns $XDG_DATA_HOME/difuse/NAME, or ~/.local/share/difuse/NAME,
// creating its parent.
func DataDir(name string) (string, error) {
	base := os.Getenv("XDG_DATA_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no -d given and no home directory: %w", err)
		}
		base = filepath.Join(home, ".local", "share")
	}
	parent := filepath.Join(base, "difuse")
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", parent, err)
	}
	return filepath.Join(parent, name), nil
}

// NewLogger returns a logger writing to w at level (debug, info, warn or
// error), as JSON or text.
func NewLogger(w io.Writer, level string, json bool) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("bad -log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if json {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

// Exit codes of the commands.
const (
	ExitFailure = 1
	ExitUsage   = 2
	ExitDataDir = 3 // data directory missing, locked or full
	ExitListen  = 4 // address unavailable
	ExitJoin    = 5 // cluster unreachable
	ExitMount   = 6 // mountpoint or FUSE unusable
)

// Token returns the join token a command was given: the -token flag's
// value, else the contents of the -token-file flag's file, else the
// environment variable DIFUSE_TOKEN; empty if none.
func Token(flagValue, file string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("the token file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return os.Getenv("DIFUSE_TOKEN"), nil
}
