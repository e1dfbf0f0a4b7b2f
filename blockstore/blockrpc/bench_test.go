package blockrpc

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/difuse/difuse/blockstore"
	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/store"
	"github.com/difuse/difuse/store/badgerdb"
)

// BenchmarkSetBlock measures storing distinct 1 MiB blocks durably: into
// one local Badger (Update then Sync: the baseline), into the local block
// store (a synced file each), and at quorum into a 3-host cluster over
// loopback gRPC, each by 1 and by 4 concurrent writers.
// scripts/bench-blocks.sh prints the ratios to Badger.
func BenchmarkSetBlock(b *testing.B) {
	const size = 1 << 20
	for _, writers := range []int{1, 4} {
		b.Run(fmt.Sprintf("badger/writers=%d", writers), func(b *testing.B) {
			db, err := badgerdb.Open(badgerdb.Options{Dir: b.TempDir(), MinFreeBytes: -1, GCInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			runBlocks(b, writers, size, func(_ context.Context, data []byte) error {
				key := blockstore.Sum(data)
				if err := db.Update(func(w store.Writer) error { return w.Set(key[:], data) }); err != nil {
					return err
				}
				return db.Sync()
			})
		})
		b.Run(fmt.Sprintf("files/writers=%d", writers), func(b *testing.B) {
			local, err := blockstore.OpenLocal(b.TempDir(), nil)
			if err != nil {
				b.Fatal(err)
			}
			runBlocks(b, writers, size, func(_ context.Context, data []byte) error {
				_, _, err := local.Put(data, true)
				return err
			})
		})
		b.Run(fmt.Sprintf("quorum/writers=%d", writers), func(b *testing.B) {
			hosts := startCluster(b, 3, true)
			var turn atomic.Int64
			runBlocks(b, writers, size, func(ctx context.Context, data []byte) error {
				_, err := hosts[turn.Add(1)%3].svc.Set(ctx, data, level.Quorum)
				return err
			})
		})
	}
}

// runBlocks stores b.N distinct blocks of size bytes through op, from
// writers goroutines.
func runBlocks(b *testing.B, writers, size int, op func(context.Context, []byte) error) {
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	b.SetBytes(int64(size))
	b.ResetTimer()
	for w := range writers {
		wg.Go(func() {
			data := make([]byte, size)
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				for j := 0; j < len(data); j += 4096 {
					data[j], data[j+1], data[j+2] = byte(i), byte(i>>8), byte(w) // distinct blocks
					data[j+3] = byte(i >> 16)
				}
				if err := op(ctx, data); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}
