// Package access keeps the cluster's record of who may no longer get in:
// revoked tokens and removed members, in one transaction-log partition
// that every node reads (and checks every token and handshake against),
// and that nodes and admins write. It does not check tokens or
// certificates itself (see identity) nor hold a node's copy (see node).
package access

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/difuse/difuse/identity"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/txlog"
)

// Partition is the transaction-log partition of the record. Its records:
//
//   - "token/ID": a Token, for a token made by difused token create, or
//     revoked;
//   - "removed/NAME": a Removal, for a member that left or was removed.
const Partition = "sys/access"

// Record name prefixes in Partition.
const (
	TokenPrefix   = "token/"
	RemovedPrefix = "removed/"
)

// Token is what the cluster keeps of a token.
type Token struct {
	ID      string        `json:"id"`
	Role    identity.Role `json:"role,omitempty"`
	Expires time.Time     `json:"expires,omitzero"`
	Created time.Time     `json:"created,omitzero"`
	Note    string        `json:"note,omitempty"`
	Revoked time.Time     `json:"revoked,omitzero"`
}

// Removal records a member that left or was removed: every certificate
// issued to its name is refused, except those issued to the name again
// later (Allowed, by serial number in hex).
type Removal struct {
	Name    string    `json:"name"`
	At      time.Time `json:"at"`
	Allowed []string  `json:"allowed,omitempty"`
}

// Doer runs transaction-log requests: a node's txlog.Service or a
// client's cluster.
type Doer interface {
	Do(ctx context.Context, req txlog.Request) (txlog.Response, error)
}

// List calls f for every record of Partition whose name starts with
// prefix, read at quorum. A partition never written lists nothing.
func List(ctx context.Context, d Doer, prefix string, f func(txlog.Record) error) error {
	after := ""
	for {
		resp, err := d.Do(ctx, txlog.Request{Partition: Partition, Level: level.Quorum, Kind: txlog.KindList, Name: prefix, After: after})
		if errors.Is(err, txlog.ErrNoPartition) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("access: list %s: %w", Partition, err)
		}
		for _, rec := range resp.Records {
			if err := f(rec); err != nil {
				return err
			}
			after = rec.Name
		}
		if !resp.More || len(resp.Records) == 0 {
			return nil
		}
	}
}

// State is what nodes refuse: revoked tokens' IDs and removed members.
type State struct {
	Revoked []string  `json:"revoked"`
	Removed []Removal `json:"removed"`
}

// Read reads the record's refusals, sorted.
func Read(ctx context.Context, d Doer) (State, error) {
	var s State
	err := List(ctx, d, "", func(rec txlog.Record) error {
		switch {
		case strings.HasPrefix(rec.Name, TokenPrefix):
			t, err := decode[Token](rec)
			if err == nil && !t.Revoked.IsZero() {
				s.Revoked = append(s.Revoked, t.ID)
			}
			return err
		case strings.HasPrefix(rec.Name, RemovedPrefix):
			r, err := decode[Removal](rec)
			s.Removed = append(s.Removed, r)
			return err
		}
		return nil
	})
	s.sort()
	return s, err
}

func (s *State) sort() {
	slices.Sort(s.Revoked)
	slices.SortFunc(s.Removed, func(x, y Removal) int { return strings.Compare(x.Name, y.Name) })
}

// Equal reports whether two states refuse the same.
func (s State) Equal(o State) bool {
	return slices.Equal(s.Revoked, o.Revoked) && slices.EqualFunc(s.Removed, o.Removed, func(x, y Removal) bool {
		return x.Name == y.Name && x.At.Equal(y.At) && slices.Equal(x.Allowed, y.Allowed)
	})
}

// Tokens returns every token the record holds, in ID order.
func Tokens(ctx context.Context, d Doer) ([]Token, error) {
	var ts []Token
	err := List(ctx, d, TokenPrefix, func(rec txlog.Record) error {
		t, err := decode[Token](rec)
		ts = append(ts, t)
		return err
	})
	return ts, err
}

// decode returns the T a record holds.
func decode[T any](rec txlog.Record) (T, error) {
	var v T
	if err := json.Unmarshal(rec.Value, &v); err != nil {
		return v, fmt.Errorf("access: record %s: %w", rec.Name, err)
	}
	return v, nil
}

// RecordToken records a token made, unless it is recorded already.
func RecordToken(ctx context.Context, d Doer, t Token) error {
	return update(ctx, d, TokenPrefix+t.ID, func(cur *Token) bool {
		if cur.ID != "" {
			return false
		}
		*cur = t
		return true
	})
}

// Revoke records that the token id is revoked as of at: every node
// refuses it once it reads the record (within seconds).
func Revoke(ctx context.Context, d Doer, id string, at time.Time) error {
	return update(ctx, d, TokenPrefix+id, func(cur *Token) bool {
		if !cur.Revoked.IsZero() {
			return false
		}
		cur.ID, cur.Revoked = id, at
		return true
	})
}

// Remove records that the member name is removed as of at: every
// certificate issued to it so far is refused from then on.
func Remove(ctx context.Context, d Doer, name string, at time.Time) error {
	return update(ctx, d, RemovedPrefix+name, func(cur *Removal) bool {
		*cur = Removal{Name: name, At: at}
		return true
	})
}

// Readmit lets a certificate (by serial number, hex) issued to a removed
// member's name in again; for a name never removed it does nothing.
func Readmit(ctx context.Context, d Doer, name, serial string) error {
	return update(ctx, d, RemovedPrefix+name, func(cur *Removal) bool {
		if cur.Name == "" || slices.Contains(cur.Allowed, serial) {
			return false
		}
		cur.Allowed = append(cur.Allowed, serial)
		return true
	})
}

// update reads the record name at quorum into a T (the zero T if there is
// none), lets change change it (false: nothing to write) and writes it if
// the record is still the one read; a conflict, or a write whose outcome
// is unknown, reads again.
func update[T any](ctx context.Context, d Doer, name string, change func(*T) bool) error {
	var err error
	for range 5 {
		var resp txlog.Response
		resp, err = d.Do(ctx, txlog.Request{Partition: Partition, Level: level.Quorum, Kind: txlog.KindRead, Name: name})
		if err != nil && !errors.Is(err, txlog.ErrNoPartition) {
			return fmt.Errorf("access: read %s: %w", name, err)
		}
		var cur T
		var match txlog.Hash // none: the record must not exist
		if resp.Record.Exists {
			if cur, err = decode[T](resp.Record); err != nil {
				return err
			}
			match = resp.Record.Hash
		}
		if !change(&cur) {
			return nil
		}
		val, merr := json.Marshal(cur)
		if merr != nil {
			return merr
		}
		_, err = d.Do(ctx, txlog.Request{Partition: Partition, Level: level.Quorum, Kind: txlog.KindWrite,
			Write: []txlog.Change{{Name: name, Value: val, IfMatch: &match}}})
		if err == nil || ctx.Err() != nil || !errors.Is(err, txlog.ErrConflict) && !errors.Is(err, txlog.ErrUnavailable) {
			return err
		}
	}
	return fmt.Errorf("access: write %s: %w", name, err)
}
