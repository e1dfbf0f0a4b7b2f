package jepsen

import (
	"slices"
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

// The file model lets an unknown operation take effect later, after the
// client's next operations, and nothing else.
func TestFileModel(t *testing.T) {
	create := func(dir int, c string) effect {
		return func(fileState) []fileState { return []fileState{{dir, c}} }
	}
	overwrite := func(dir int, c string) effect {
		return func(s fileState) []fileState {
			if s.dir != dir {
				return nil
			}
			return []fileState{{dir, c}}
		}
	}
	rename := func(from, to int) effect {
		return func(s fileState) []fileState {
			if s.dir != from {
				return nil
			}
			return []fileState{{to, s.content}}
		}
	}
	// A rename whose outcome was unknown took effect after an overwrite
	// through its old name; a later rename moved the file on, which
	// proves the first one took effect.
	f := newFile("f")
	f.apply(outOK, create(0, "a"))
	f.apply(outUnknown, rename(0, 2))
	f.apply(outOK, overwrite(0, "b"))
	if got := f.possible(); !slices.Equal(got, []fileState{{0, "b"}, {2, "b"}}) {
		t.Errorf("pending rename: %v, want {0 b} {2 b}", got)
	}
	f.apply(outOK, rename(2, 1))
	if got := f.possible(); !slices.Equal(got, []fileState{{1, "b"}}) {
		t.Errorf("late rename: %v, want only {1 b}", got)
	}
	// A failed operation never takes effect.
	f = newFile("f")
	f.apply(outOK, create(0, "a"))
	f.apply(outFailed, rename(0, 2))
	f.apply(outOK, overwrite(0, "b"))
	if got := f.possible(); !slices.Equal(got, []fileState{{0, "b"}}) {
		t.Errorf("failed rename: %v, want only {0 b}", got)
	}
	// Past maxPending unknown operations, the oldest can no longer take
	// effect, but what it did before stays possible.
	f = newFile("f")
	f.apply(outOK, create(0, "a"))
	f.apply(outUnknown, rename(0, 1))
	for range maxPending {
		f.apply(outUnknown, overwrite(2, "z"))
	}
	if got := f.possible(); !slices.Contains(got, fileState{1, "a"}) || !slices.Contains(got, fileState{0, "a"}) {
		t.Errorf("retired rename: %v, want {0 a} and {1 a}", got)
	}
}
