package jepsen

import (
	"fmt"
	"slices"

	"github.com/anishathalye/porcupine"
)

// Kinds of register operations.
const (
	opRead = iota
	opWrite
	opCAS
)

// Outcomes of an operation.
const (
	outOK      = iota
	outFailed  // did not take effect: a CAS whose expected value was not there
	outUnknown // may or may not have taken effect (a timeout, too few replicas)
	// outConflict is a CAS refused because the key's version was not the
	// one expected. Every write's value is unique and applied once (a
	// retried write carries its ID), so the key did not hold the expected
	// value either.
	outConflict
)

// regInput is a register operation on one key. Values are unique per
// write, and "" is a key that does not exist.
type regInput struct {
	Key   string
	Kind  int
	From  string // a CAS's expected value
	Value string // a write's or CAS's new value
	Level string
}

// regOutput is what an operation returned.
type regOutput struct {
	Outcome int
	Value   string // a read's value
}

// registerModel is a register per key: reads see the last value written;
// a CAS writes only over the value it expects; an operation of unknown
// outcome may or may not have happened; a CAS that conflicted found
// another value than the one it expected.
var registerModel = porcupine.NondeterministicModel{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		for _, op := range h {
			k := op.Input.(regInput).Key
			by[k] = append(by[k], op)
		}
		keys := make([]string, 0, len(by))
		for k := range by {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		out := make([][]porcupine.Operation, len(keys))
		for i, k := range keys {
			out[i] = by[k]
		}
		return out
	},
	Init: func() []any { return []any{""} },
	Step: func(state, input, output any) []any {
		s, in, out := state.(string), input.(regInput), output.(regOutput)
		switch in.Kind {
		case opRead:
			if out.Value == s {
				return []any{s}
			}
			return nil
		case opWrite:
			switch out.Outcome {
			case outUnknown:
				return []any{s, in.Value}
			case outFailed:
				return []any{s}
			}
			return []any{in.Value}
		default: // CAS
			switch {
			case out.Outcome == outOK && s == in.From:
				return []any{in.Value}
			case out.Outcome == outFailed:
				return []any{s}
			case out.Outcome == outConflict && s != in.From:
				return []any{s}
			case out.Outcome == outUnknown && s == in.From:
				return []any{s, in.Value}
			case out.Outcome == outUnknown:
				return []any{s}
			}
			return nil
		}
	},
	Equal: func(a, b any) bool { return a.(string) == b.(string) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(regInput), output.(regOutput)
		var s string
		switch in.Kind {
		case opRead:
			s = fmt.Sprintf("read@%s -> %q", in.Level, out.Value)
		case opWrite:
			s = fmt.Sprintf("write@%s %q", in.Level, in.Value)
		default:
			s = fmt.Sprintf("cas@%s %q -> %q", in.Level, in.From, in.Value)
		}
		switch out.Outcome {
		case outFailed:
			s += " (failed)"
		case outConflict:
			s += " (conflict)"
		case outUnknown:
			s += " (unknown)"
		}
		return s
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%q", state.(string)) },
}
