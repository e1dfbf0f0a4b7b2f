// Package level names the consistency levels that every difuse operation
// takes: how many replicas must hold a write before it is acknowledged,
// and how many a read consults. The transaction logs and the block store
// each say what a level means for their operations.
package level

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Level is a consistency level, chosen per operation.
type Level uint8

// The levels, from the zero value on.
const (
	// Quorum: a majority of the replica set.
	Quorum Level = iota
	// All: every replica of the N.
	All
	// Leader: the replica set's leader alone.
	Leader
	// Lazy: any replica, nothing waited for.
	Lazy
)

var names = [...]string{Quorum: "quorum", All: "all", Leader: "leader", Lazy: "lazy"}

// String returns the level's name.
func (l Level) String() string {
	if int(l) < len(names) {
		return names[l]
	}
	return "level(" + strconv.Itoa(int(l)) + ")"
}

// Valid reports whether l is one of the four levels.
func (l Level) Valid() bool { return int(l) < len(names) }

// ErrUnknown is wrapped by Parse's error.
var ErrUnknown = errors.New("unknown consistency")

// Parse reads a level's name, in any case; the empty string gives def.
func Parse(s string, def Level) (Level, error) {
	if s == "" {
		return def, nil
	}
	for l, n := range names {
		if strings.EqualFold(s, n) {
			return Level(l), nil
		}
	}
	return 0, fmt.Errorf("%w %q: want all, quorum, leader or lazy", ErrUnknown, s)
}
