package blockstore

import "context"

// Transport carries the block store's calls between hosts. Errors from
// the handler that wrap ErrNotFound or ErrCorrupt keep that identity; any
// other failure means the host could not be reached or could not do it.
type Transport interface {
	// Has reports which of hashes the host holds; with touch, it marks
	// those it holds as used now (see Local.Touch).
	Has(ctx context.Context, to string, hashes []Hash, touch bool) ([]bool, error)
	// Put gives the host a block, synced to its disk before the call
	// returns if sync is set.
	Put(ctx context.Context, to string, h Hash, data []byte, sync bool) error
	// Get fetches a block; the host checks its hash first.
	Get(ctx context.Context, to string, h Hash) ([]byte, error)
	// Delete removes a block from the host.
	Delete(ctx context.Context, to string, h Hash, sync bool) error
}

// Handler serves the block store's calls; *Service implements it.
type Handler interface {
	HandleHas(hashes []Hash, touch bool) ([]bool, error)
	HandlePut(h Hash, data []byte, sync bool) error
	HandleGet(h Hash) ([]byte, error)
	HandleDelete(h Hash, sync bool) error
}
