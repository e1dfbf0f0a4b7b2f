package txlog

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/difuse/difuse/internal/codec"
)

// Hash identifies a transaction: the SHA-256 of its encoding.
type Hash [32]byte

// String returns the hash in hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// IsZero reports whether h is the zero hash, which stands for "no
// transaction".
func (h Hash) IsZero() bool { return h == Hash{} }

// ParseHash reads the hex form of a hash.
func ParseHash(s string) (Hash, error) {
	var h Hash
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(h) {
		return h, fmt.Errorf("txlog: bad transaction hash %q", s)
	}
	copy(h[:], b)
	return h, nil
}

// Ballot orders leaderships of a partition: a higher ballot deposes a lower
// one. Ballots of different hosts never tie.
type Ballot struct {
	N    uint64
	Host string
}

// Less reports whether b orders before o.
func (b Ballot) Less(o Ballot) bool {
	if b.N != o.N {
		return b.N < o.N
	}
	return b.Host < o.Host
}

// String returns "N@host".
func (b Ballot) String() string { return strconv.FormatUint(b.N, 10) + "@" + b.Host }

// OpKind says what an operation does to its record.
type OpKind uint8

// Operation kinds.
const (
	// OpNoop changes nothing; a new leader commits one to settle the log.
	OpNoop OpKind = iota
	// OpSet sets the record's value.
	OpSet
	// OpDelete deletes the record.
	OpDelete
	// OpConfig sets the partition's replica set: Value holds the members'
	// addresses, one per line. The latest one in a log is in force.
	OpConfig
)

// Op is one record's change in a transaction.
type Op struct {
	Kind  OpKind
	Name  string
	Value []byte
	// Prev is the hash of the transaction that last changed the record (zero
	// if none), and PrevHeight its height: each record's changes form a
	// hash chain of their own.
	Prev       Hash
	PrevHeight uint64
}

// Tx is one transaction of a partition's log. Its hash covers every field.
type Tx struct {
	Partition string
	// Height is the transaction's position in the partition's log, from 1.
	Height uint64
	// Prev is the hash of the transaction at Height-1 (zero at height 1).
	Prev Hash
	// Ballot is the ballot of the leader that created the transaction.
	Ballot Ballot
	// Time is the leader's clock at creation, in Unix nanoseconds. It is
	// informative; nothing depends on clocks agreeing.
	Time int64
	// ID is the WriteID of the write that made the transaction (zero for a
	// leader's no-op or set change).
	ID  WriteID
	Ops []Op
}

// WriteID names one write across the attempts made to apply it: a leader
// whose log holds a transaction with the write's ID answers with that
// transaction instead of applying the write a second time. The zero ID
// names nothing.
type WriteID [16]byte

// IsZero reports whether id is the zero ID.
func (id WriteID) IsZero() bool { return id == WriteID{} }

// NewWriteID returns a random WriteID.
func NewWriteID() WriteID {
	var id WriteID
	rand.Read(id[:]) // never fails
	return id
}

// Encoding versions: a transaction without a write ID is encoded as
// version 1 (as logs were before write IDs), one with an ID as version 2.
const (
	txVersion1 = 1
	txVersion2 = 2
)

// Encode returns the transaction's canonical encoding, which its hash
// covers and the store keeps.
func (t *Tx) Encode() []byte {
	b := make([]byte, 0, 112+len(t.Partition)+len(t.Ballot.Host)+64*len(t.Ops))
	version := byte(txVersion2)
	if t.ID.IsZero() {
		version = txVersion1
	}
	b = append(b, version)
	b = codec.AppendString(b, t.Partition)
	b = binary.BigEndian.AppendUint64(b, t.Height)
	b = append(b, t.Prev[:]...)
	b = binary.BigEndian.AppendUint64(b, t.Ballot.N)
	b = codec.AppendString(b, t.Ballot.Host)
	b = binary.BigEndian.AppendUint64(b, uint64(t.Time))
	if version == txVersion2 {
		b = append(b, t.ID[:]...)
	}
	b = binary.AppendUvarint(b, uint64(len(t.Ops)))
	for _, op := range t.Ops {
		b = append(b, byte(op.Kind))
		b = codec.AppendString(b, op.Name)
		b = append(b, op.Prev[:]...)
		b = binary.BigEndian.AppendUint64(b, op.PrevHeight)
		b = codec.AppendString(b, string(op.Value))
	}
	return b
}

// Hash returns the SHA-256 of the encoding.
func (t *Tx) Hash() Hash { return sha256.Sum256(t.Encode()) }

// minOpBytes is the fewest bytes an operation's encoding takes: its kind,
// two empty strings' lengths, the previous hash and height.
const minOpBytes = 1 + 1 + len(Hash{}) + 8 + 1

// errDecode is wrapped by every decoding error.
var errDecode = errors.New("txlog: malformed transaction")

// DecodeTx parses an encoding made by Encode. It never panics.
func DecodeTx(b []byte) (*Tx, error) {
	d := codec.NewDecoder(b, errDecode)
	version := d.Byte()
	if version != txVersion1 && version != txVersion2 {
		return nil, fmt.Errorf("%w: version %d", errDecode, version)
	}
	t := &Tx{}
	t.Partition = d.String()
	t.Height = d.Uint64()
	readHash(d, &t.Prev)
	t.Ballot.N = d.Uint64()
	t.Ballot.Host = d.String()
	t.Time = int64(d.Uint64())
	if version == txVersion2 {
		copy(t.ID[:], d.Take(len(t.ID)))
		if t.ID.IsZero() {
			d.Fail("a zero write ID")
		}
	}
	n := d.Count(minOpBytes)
	t.Ops = make([]Op, 0, n)
	for range n {
		var op Op
		op.Kind = OpKind(d.Byte())
		op.Name = d.String()
		readHash(d, &op.Prev)
		op.PrevHeight = d.Uint64()
		op.Value = []byte(d.String())
		if op.Kind > OpConfig {
			d.Fail("operation kind %d", op.Kind)
		}
		t.Ops = append(t.Ops, op)
	}
	if err := d.Finish(); err != nil {
		return nil, err
	}
	return t, nil
}

// readHash reads a hash's 32 bytes into h.
func readHash(d *codec.Decoder, h *Hash) {
	if b := d.Take(len(h)); b != nil {
		copy(h[:], b)
	}
}

// configOp returns the operation that sets the replica set to members.
func configOp(members []string) Op {
	return Op{Kind: OpConfig, Value: []byte(strings.Join(members, "\n"))}
}

// members returns the replica set an OpConfig operation sets.
func (op Op) members() []string { return strings.Split(string(op.Value), "\n") }

// lastOp returns the last of t's operations that sets or deletes record
// name: the one that decides the record's state after t.
func (t *Tx) lastOp(name string) (Op, bool) {
	for i := len(t.Ops) - 1; i >= 0; i-- {
		if op := t.Ops[i]; op.Name == name && (op.Kind == OpSet || op.Kind == OpDelete) {
			return op, true
		}
	}
	return Op{}, false
}
