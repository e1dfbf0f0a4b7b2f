package ring

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/bits"
	"strconv"
)

// IDBits is the size of the identifier circle: ids are 256-bit numbers,
// read big-endian.
const IDBits = 256

// ID is a position on the identifier circle.
type ID [IDBits / 8]byte

// HashKey returns the position of a key on the circle (its SHA-256).
func HashKey(key []byte) ID { return sha256.Sum256(key) }

// VNodeID returns the id of the index-th virtual node of the host at addr.
func VNodeID(addr string, index int) ID {
	return HashKey([]byte(addr + "#" + strconv.Itoa(index)))
}

// Genuine reports whether ref's id is one of the vnode ids of the host at
// ref's address (VNodeID of an index below MaxVNodes): a host that
// proves its address can place its vnodes only where they belong.
func Genuine(ref Ref) bool {
	for i := range MaxVNodes {
		if VNodeID(ref.Addr, i) == ref.ID {
			return true
		}
	}
	return false
}

// ParseID parses the 64-digit hex form that String returns.
func ParseID(s string) (ID, error) {
	var id ID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("ring: bad id %q: want %d hex digits", s, 2*len(id))
	}
	copy(id[:], b)
	return id, nil
}

// IDFromBytes returns the id held in b, which must be exactly 32 bytes.
func IDFromBytes(b []byte) (ID, error) {
	var id ID
	if len(b) != len(id) {
		return id, fmt.Errorf("ring: id of %d bytes, want %d", len(b), len(id))
	}
	copy(id[:], b)
	return id, nil
}

// String returns the id in hex.
func (a ID) String() string { return hex.EncodeToString(a[:]) }

// Short returns the first 8 hex digits, for logs.
func (a ID) Short() string { return hex.EncodeToString(a[:4]) }

// Cmp compares a and b as numbers.
func (a ID) Cmp(b ID) int { return bytes.Compare(a[:], b[:]) }

// between reports whether x lies strictly inside the arc that runs
// clockwise from a to b. When a == b the arc is the whole circle but a.
func between(a, x, b ID) bool {
	if a.Cmp(b) < 0 {
		return a.Cmp(x) < 0 && x.Cmp(b) < 0
	}
	return a.Cmp(x) < 0 || x.Cmp(b) < 0
}

// betweenRight reports whether x lies in the arc (a, b]: strictly after a,
// up to and including b. When a == b it is the whole circle.
func betweenRight(a, x, b ID) bool { return x == b || between(a, x, b) }

// addPow2 returns a + 2^i modulo 2^IDBits.
func (a ID) addPow2(i int) ID {
	byteIdx := len(a) - 1 - i/8
	carry := uint(1) << (i % 8)
	for j := byteIdx; j >= 0 && carry != 0; j-- {
		sum := uint(a[j]) + carry
		a[j] = byte(sum)
		carry = sum >> 8
	}
	return a
}

// distance returns b - a modulo 2^IDBits: how far clockwise b lies from a.
func distance(a, b ID) ID {
	var d ID
	borrow := 0
	for j := len(a) - 1; j >= 0; j-- {
		v := int(b[j]) - int(a[j]) - borrow
		borrow = 0
		if v < 0 {
			v += 256
			borrow = 1
		}
		d[j] = byte(v)
	}
	return d
}

// bitLen returns the number of bits needed to write a as a number: the
// smallest i with a < 2^i.
func (a ID) bitLen() int {
	for j, b := range a {
		if b != 0 {
			return (len(a)-j-1)*8 + bits.Len8(b)
		}
	}
	return 0
}

// MarshalText writes the id in hex, so JSON shows ids as strings.
func (a ID) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText reads the hex form.
func (a *ID) UnmarshalText(b []byte) error {
	id, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*a = id
	return nil
}
