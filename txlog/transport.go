package txlog

import (
	"context"
	"errors"
	"fmt"

	"github.com/difuse/difuse/level"
)

// Errors callers branch on.
var (
	// ErrConflict: a compare-and-set condition did not hold.
	ErrConflict = errors.New("txlog: conflict: the record's current transaction is not the one required")
	// ErrNotFound: the record does not exist.
	ErrNotFound = errors.New("txlog: record not found")
	// ErrUnavailable: too few replicas answered for the consistency level.
	ErrUnavailable = errors.New("txlog: replicas unavailable")
	// ErrBadRequest: the request is malformed (bad name, oversized value,
	// unknown level).
	ErrBadRequest = errors.New("txlog: bad request")
	// ErrNotLeader: the host asked to lead a partition does not lead it in
	// its view of the ring; the caller looks the leader up again.
	ErrNotLeader = errors.New("txlog: not the partition's leader")
	// ErrStaleBallot: a replica has promised a higher ballot; the leader
	// that sent the request is deposed.
	ErrStaleBallot = errors.New("txlog: stale ballot")
	// ErrTakeover is the ErrUnavailable of a leader that could not take
	// over its partition because too few replicas promised: nothing of
	// the request was applied, and it may succeed once the ring names
	// other replicas.
	ErrTakeover = fmt.Errorf("%w: the leader could not take over", ErrUnavailable)
	// ErrCompacted: the entries asked for were compacted into the
	// replica's snapshot; the caller installs the snapshot instead.
	ErrCompacted = errors.New("txlog: compacted")
	// ErrNoPartition: the replica holds nothing of the partition, not even
	// a promise.
	ErrNoPartition = errors.New("txlog: no such partition here")
	// ErrCommittedShort is the ErrUnavailable of a write at level all
	// that committed, but on fewer replicas than the level asks: it took
	// effect.
	ErrCommittedShort = fmt.Errorf("%w: committed, on fewer replicas than the level asks", ErrUnavailable)
)

// PrepareReply answers a Prepare.
type PrepareReply struct {
	// OK is false if the replica has promised a higher ballot, Promised.
	OK       bool
	Promised Ballot
	// The replica's log head.
	Last     uint64
	LastHash Hash
	LastBal  Ballot
	Commit   uint64
}

// AppendRequest carries log entries from a leader to a replica.
type AppendRequest struct {
	Partition string
	Ballot    Ballot
	// PrevHeight and PrevHash name the entry the first of Txs follows; the
	// replica refuses the entries unless its log has it.
	PrevHeight uint64
	PrevHash   Hash
	Txs        []*Tx
	// Commit is the leader's commit height.
	Commit uint64
	// Install carries no entries: the replica's log lacks entries that
	// the leader compacted, so it is to install the leader's snapshot at
	// PrevHeight (the leader's commit point), whose entry has PrevHash,
	// fetching it from the ballot's host.
	Install bool
}

// AppendReply answers an Append.
type AppendReply struct {
	// Stale: the replica has promised the higher ballot Promised.
	Stale    bool
	Promised Ballot
	// Mismatch: the replica's log lacks the entry PrevHeight/PrevHash; Last
	// is the replica's last height, where the leader backs up to.
	Mismatch bool
	Last     uint64
}

// Kind says what a Request does.
type Kind uint8

// String names the kind.
func (k Kind) String() string {
	switch k {
	case KindRead:
		return "read"
	case KindWrite:
		return "write"
	case KindHistory:
		return "history"
	case KindList:
		return "list"
	case KindSync:
		return "sync"
	}
	return fmt.Sprintf("kind%d", uint8(k))
}

// Request kinds.
const (
	// KindRead reads record Name.
	KindRead Kind = iota
	// KindWrite applies Write.
	KindWrite
	// KindHistory lists the transactions that changed record Name.
	KindHistory
	// KindList lists the records whose names start with Name, in name
	// order, after After, at most Limit of them.
	KindList
	// KindSync makes the leader move the replica set to the ring's and
	// bring every member's log level with its own (see Service.Sync).
	KindSync
)

// Request is a client's operation, forwarded by any host to the
// partition's leader.
type Request struct {
	Partition string
	Level     level.Level
	Kind      Kind
	// Name is the record a read or history names, or a list's prefix.
	Name string
	// After and Limit page a list: it starts after the name After, and
	// returns at most Limit records (MaxList if 0).
	After string
	Limit int
	// Write holds a write's changes, at most MaxChanges of them.
	Write []Change
	// IfEmpty, when set, makes a write apply only if no live record's name
	// starts with it (ErrConflict otherwise), checked atomically with the
	// changes' conditions.
	IfEmpty string
	// ID names a write across its attempts (Service.Do and the client give
	// one to a write that has none), so that a retry whose earlier attempt
	// was applied gets that attempt's transaction instead of a second one.
	ID WriteID
}

// Response answers a Request.
type Response struct {
	Tx      TxRef
	Record  Record
	History []*Tx
	// Records answers a list; More says that more records follow.
	Records []Record
	More    bool
	// Members and Synced answer a sync: the replica set in force, and how
	// many of its members hold the leader's whole log, whose head is Tx.
	Members []string
	Synced  int
}

// TxRef names a committed transaction.
type TxRef struct {
	Hash   Hash
	Height uint64
}

// Change is one record's change in a write, with an optional
// compare-and-set condition.
type Change struct {
	Name   string
	Delete bool
	// Check makes the change a condition only: IfMatch must hold, and the
	// record is not written.
	Check bool
	Value []byte
	// IfMatch, when set, requires the record's current transaction hash to
	// be *IfMatch; a zero hash requires that the record does not exist.
	IfMatch *Hash
}

// Transport carries the transaction log's calls between hosts. Every method
// fails with an error wrapping ErrUnreachable-like transport errors when the
// host cannot be reached within ctx; handlers' errors (ErrConflict,
// ErrNotFound, ErrUnavailable, ErrBadRequest, ErrNotLeader) keep their
// identity across it.
type Transport interface {
	Prepare(ctx context.Context, to, partition string, b Ballot) (PrepareReply, error)
	Append(ctx context.Context, to string, req AppendRequest) (AppendReply, error)
	// Fetch returns up to limit entries of the partition's log from height
	// from on.
	Fetch(ctx context.Context, to, partition string, from uint64, limit int) ([]*Tx, error)
	// ReadLocal returns the replica's committed state of a record.
	ReadLocal(ctx context.Context, to, partition, name string) (Record, error)
	// Snapshot returns a page of the replica's records at a committed
	// height (see Service.HandleSnapshot).
	Snapshot(ctx context.Context, to, partition string, height uint64, after string) (SnapshotPage, error)
	// Forward runs a client request on the host at to, which leads.
	Forward(ctx context.Context, to string, req Request) (Response, error)
}

// Handler serves the transaction log's calls; *Service implements it.
type Handler interface {
	HandlePrepare(partition string, b Ballot) (PrepareReply, error)
	HandleAppend(ctx context.Context, req AppendRequest) (AppendReply, error)
	HandleFetch(partition string, from uint64, limit int) ([]*Tx, error)
	HandleReadLocal(partition, name string) (Record, error)
	HandleSnapshot(partition string, height uint64, after string) (SnapshotPage, error)
	HandleForward(ctx context.Context, req Request) (Response, error)
}
