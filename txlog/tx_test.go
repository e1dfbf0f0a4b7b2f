package txlog

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"

	"github.com/difuse/difuse/internal/memtest"
)

func sampleTx() *Tx {
	return &Tx{
		Partition: "fs/d/1", Height: 7, Prev: Hash{1}, Ballot: Ballot{N: 3, Host: "10.0.0.1:7000"},
		Time: 1234, ID: WriteID{9},
		Ops: []Op{
			{Kind: OpSet, Name: "a", Prev: Hash{2}, PrevHeight: 5, Value: []byte("x")},
			{Kind: OpDelete, Name: "b"},
		},
	}
}

func TestTxRoundTrip(t *testing.T) {
	for _, tx := range []*Tx{sampleTx(), {Partition: "p", Height: 1}} {
		got, err := DecodeTx(tx.Encode())
		if err != nil {
			t.Fatal(err)
		}
		if got.Hash() != tx.Hash() {
			t.Errorf("decoded %+v, encoded %+v", got, tx)
		}
	}
}

// An entry that announces far more operations than its bytes can hold is
// refused before anything is sized by the count.
func TestDecodeTxBoundsTheCount(t *testing.T) {
	tx := sampleTx()
	tx.Ops = nil
	b := tx.Encode()
	b = b[:len(b)-1] // the zero count
	b = binary.AppendUvarint(b, 1<<22)
	b = append(b, make([]byte, 4<<20)...) // 4 MiB of zeros: no operation parses
	var err error
	n := memtest.Allocated(func() { _, err = DecodeTx(b) })
	if !errors.Is(err, errDecode) {
		t.Errorf("decoding %d operations in %d bytes: %v", 1<<22, len(b), err)
	}
	if n > 2*uint64(len(b)) {
		t.Errorf("decoding %d bytes allocated %d", len(b), n)
	}
	// A count the bytes could hold if every operation were empty is
	// allocated, no more.
	b = binary.AppendUvarint(tx.Encode()[:len(tx.Encode())-1], uint64((4<<20)/minOpBytes))
	b = append(b, make([]byte, 4<<20)...)
	n = memtest.Allocated(func() { _, err = DecodeTx(b) })
	if n > 4*uint64(len(b)) {
		t.Errorf("decoding %d bytes allocated %d", len(b), n)
	}
}

func FuzzDecodeTx(f *testing.F) {
	f.Add(sampleTx().Encode())
	f.Add([]byte{txVersion1})
	f.Fuzz(func(t *testing.T, b []byte) {
		tx, err := DecodeTx(b)
		if err != nil {
			return
		}
		again, err := DecodeTx(tx.Encode())
		if err != nil || !reflect.DeepEqual(normalise(again), normalise(tx)) {
			t.Fatalf("re-decoding %+v: %+v, %v", tx, again, err)
		}
	})
}

// normalise makes empty values nil, as decoding an encoding gives them.
func normalise(t *Tx) *Tx {
	c := *t
	c.Ops = nil
	for _, op := range t.Ops {
		if len(op.Value) == 0 {
			op.Value = nil
		}
		c.Ops = append(c.Ops, op)
	}
	return &c
}
