package txlogrpc

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/difuse/difuse/level"
	"github.com/difuse/difuse/store"
	"github.com/difuse/difuse/store/badgerdb"
)

// benchValue is the value every benchmark writes: a small record, as an
// inode or a directory entry is.
var benchValue = make([]byte, 256)

// BenchmarkWrite measures durable writes per second: into one local Badger
// (Update then Sync, the baseline), and at quorum into a 3-host cluster
// over loopback gRPC on Badger, each by 1 and by 16 concurrent clients.
// scripts/bench-txlog.sh runs it and prints the ratios.
func BenchmarkWrite(b *testing.B) {
	for _, clients := range []int{1, 16} {
		b.Run(fmt.Sprintf("badger/clients=%d", clients), func(b *testing.B) {
			db, err := badgerdb.Open(badgerdb.Options{Dir: b.TempDir(), MinFreeBytes: -1, GCInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			run(b, clients, func(_ context.Context, client int, i int64) error {
				key := fmt.Appendf(nil, "k%d/%d", client, i)
				if err := db.Update(func(w store.Writer) error { return w.Set(key, benchValue) }); err != nil {
					return err
				}
				return db.Sync()
			})
		})
		b.Run(fmt.Sprintf("quorum/clients=%d", clients), func(b *testing.B) {
			hosts := startCluster(b, 3, true)
			// Each client writes its own key, through the hosts in turn, as
			// users of different nodes would.
			run(b, clients, func(ctx context.Context, client int, i int64) error {
				via := hosts[(client+int(i))%len(hosts)].svc
				_, err := via.Write(ctx, fmt.Sprintf("kv/bench-%d", client), set("", string(benchValue)), level.Quorum)
				return err
			})
		})
	}
}

// run does b.N operations spread over clients goroutines, after one
// untimed warm-up operation (number 0) per client, which establishes
// leaderships. Timed operations are numbered from 1.
func run(b *testing.B, clients int, op func(ctx context.Context, client int, i int64) error) {
	ctx := context.Background()
	for c := range clients {
		if err := op(ctx, c, 0); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	b.ResetTimer()
	for c := range clients {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				if err := op(ctx, c, i); err != nil {
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
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
}
