package jepsen

import (
	"testing"

	"github.com/anishathalye/porcupine"
)

// The register model accepts what may happen and rejects what may not.
func TestRegisterModel(t *testing.T) {
	op := func(client int, call, ret int64, in regInput, out regOutput) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Call: call, Return: ret, Input: in, Output: out}
	}
	w := func(v string) regInput { return regInput{Key: "k", Kind: opWrite, Value: v} }
	read := regInput{Key: "k", Kind: opRead}
	for _, tc := range []struct {
		name  string
		ops   []porcupine.Operation
		legal bool
	}{
		{"read after write", []porcupine.Operation{
			op(0, 0, 1, w("a"), regOutput{}), op(1, 2, 3, read, regOutput{Value: "a"})}, true},
		{"stale read", []porcupine.Operation{
			op(0, 0, 1, w("a"), regOutput{}), op(0, 2, 3, w("b"), regOutput{}),
			op(1, 4, 5, read, regOutput{Value: "a"})}, false},
		{"a failed write has no effect", []porcupine.Operation{
			op(0, 0, 1, w("a"), regOutput{}), op(0, 2, 3, w("b"), regOutput{Outcome: outFailed}),
			op(1, 4, 5, read, regOutput{Value: "a"})}, true},
		{"a failed write is not seen", []porcupine.Operation{
			op(0, 0, 1, w("b"), regOutput{Outcome: outFailed}), op(1, 4, 5, read, regOutput{Value: "b"})}, false},
		{"an unknown write may be seen late", []porcupine.Operation{
			op(0, 0, unknownReturn, w("b"), regOutput{Outcome: outUnknown}), op(1, 4, 5, read, regOutput{Value: ""}),
			op(1, 6, 7, read, regOutput{Value: "b"})}, true},
		{"cas over the expected value", []porcupine.Operation{
			op(0, 0, 1, w("a"), regOutput{}),
			op(0, 2, 3, regInput{Key: "k", Kind: opCAS, From: "a", Value: "c"}, regOutput{}),
			op(1, 4, 5, read, regOutput{Value: "c"})}, true},
		{"cas over another value", []porcupine.Operation{
			op(0, 0, 1, w("a"), regOutput{}),
			op(0, 2, 3, regInput{Key: "k", Kind: opCAS, From: "x", Value: "c"}, regOutput{})}, false},
		{"a failed cas changes nothing", []porcupine.Operation{
			op(0, 0, 1, w("a"), regOutput{}),
			op(0, 2, 3, regInput{Key: "k", Kind: opCAS, From: "a", Value: "c"}, regOutput{Outcome: outFailed}),
			op(1, 4, 5, read, regOutput{Value: "a"})}, true},
		{"a failed cas is not seen", []porcupine.Operation{
			op(0, 0, 1, w("a"), regOutput{}),
			op(0, 2, 3, regInput{Key: "k", Kind: opCAS, From: "a", Value: "c"}, regOutput{Outcome: outFailed}),
			op(1, 4, 5, read, regOutput{Value: "c"})}, false},
		{"a conflicting cas found another value", []porcupine.Operation{
			op(0, 0, 1, w("a"), regOutput{}),
			op(0, 2, 3, regInput{Key: "k", Kind: opCAS, From: "x", Value: "c"}, regOutput{Outcome: outConflict}),
			op(1, 4, 5, read, regOutput{Value: "a"})}, true},
		{"a cas cannot conflict with the value it expects", []porcupine.Operation{
			op(0, 0, 1, w("a"), regOutput{}),
			op(0, 2, 3, regInput{Key: "k", Kind: opCAS, From: "a", Value: "c"}, regOutput{Outcome: outConflict})}, false},
	} {
		got := porcupine.CheckOperations(registerModel.ToModel(), tc.ops)
		if got != tc.legal {
			t.Errorf("%s: linearizable %v, want %v", tc.name, got, tc.legal)
		}
	}
}

// Weak reads may be stale but return only values a write that did not
// fail put there, and never before that write was called.
func TestCheckWeakReads(t *testing.T) {
	op := func(call, ret int64, in regInput, out regOutput) porcupine.Operation {
		return porcupine.Operation{Call: call, Return: ret, Input: in, Output: out}
	}
	ops := []porcupine.Operation{
		op(0, 1, regInput{Key: "k", Kind: opWrite, Value: "a"}, regOutput{}),
		op(2, 3, regInput{Key: "k", Kind: opWrite, Value: "b"}, regOutput{Outcome: outFailed}),
		op(4, unknownReturn, regInput{Key: "k", Kind: opWrite, Value: "c"}, regOutput{Outcome: outUnknown}),
		op(6, 9, regInput{Key: "k", Kind: opWrite, Value: "d"}, regOutput{}),
	}
	read := func(call, ret int64, v string) porcupine.Operation {
		return op(call, ret, regInput{Key: "k", Kind: opRead, Level: "lazy"}, regOutput{Value: v})
	}
	for _, tc := range []struct {
		name string
		read porcupine.Operation
		ok   bool
	}{
		{"nothing yet", read(0, 1, ""), true},
		{"stale", read(10, 11, "a"), true},
		{"an unknown write", read(10, 11, "c"), true},
		{"a write still in progress", read(7, 8, "d"), true},
		{"a failed write", read(10, 11, "b"), false},
		{"a value no one wrote", read(10, 11, "x"), false},
		{"before the write was called", read(2, 5, "d"), false},
	} {
		bad := checkWeakReads(ops, []porcupine.Operation{tc.read})
		if (len(bad) == 0) != tc.ok {
			t.Errorf("%s: found %v, want ok %v", tc.name, bad, tc.ok)
		}
	}
}

// A set's final value must hold every acknowledged append, and only the
// acknowledged ones must be there.
func TestLostAdds(t *testing.T) {
	add := func(from, v string, out int) porcupine.Operation {
		return porcupine.Operation{Input: regInput{Key: "s0", Kind: opCAS, From: from, Value: v}, Output: regOutput{Outcome: out}}
	}
	ops := []porcupine.Operation{
		add("", "c0-1 ", outOK),
		add("c0-1 ", "c0-1 c1-1 ", outOK),
		add("c0-1 ", "c0-1 c2-1 ", outConflict),
		add("c0-1 c1-1 ", "c0-1 c1-1 c0-2 ", outUnknown),
	}
	isSet := func(k string) bool { return k == "s0" }
	if lost := lostAdds(ops, map[string]string{"s0": "c0-1 c1-1 "}, isSet); len(lost) != 0 {
		t.Errorf("every acknowledged append is there, yet: %v", lost)
	}
	if lost := lostAdds(ops, map[string]string{"s0": "c0-1 c2-1 c0-2 "}, isSet); len(lost) != 1 {
		t.Errorf("c1-1 is missing: found %v", lost)
	}
	if lost := lostAdds(ops, map[string]string{}, isSet); len(lost) != 0 {
		t.Errorf("an unreadable set is reported apart, yet: %v", lost)
	}
}
