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
)

// BenchmarkSetBlock measures storing distinct 1 MiB blocks durably: into
// one local Badger (the baseline: the local block store's Put, then Sync)
// and at quorum into a 3-host cluster over loopback gRPC on Badger, each by
// 1 and by 4 concurrent writers. scripts/bench-blocks.sh prints the ratios.
func BenchmarkSetBlock(b *testing.B) {
	const size = 1 << 20
	for _, writers := range []int{1, 4} {
		b.Run(fmt.Sprintf("badger/writers=%d", writers), func(b *testing.B) {
			db, err := store.Open(store.Options{Dir: b.TempDir(), MinFreeBytes: -1, GCInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			local, err := blockstore.OpenLocal(db)
			if err != nil {
				b.Fatal(err)
			}
			runBlocks(b, writers, size, func(_ context.Context, data []byte) error {
				if _, _, err := local.Put(data); err != nil {
					return err
				}
				return local.Sync()
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
