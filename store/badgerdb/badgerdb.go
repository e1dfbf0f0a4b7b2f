package badgerdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/difuse/difuse/store"
)

// Options configure Open. The zero value of every field but Dir picks the
// default given beside it.
type Options struct {
	// Dir is the data directory. Open creates it if its parent exists.
	Dir string
	// MinFreeBytes is the free space the store keeps in reserve on Dir's
	// file system: Open and Update fail with store.ErrNoSpace below it. Badger
	// writes through memory-mapped files, and a write to a mapped page the
	// file system cannot back kills the process with SIGBUS instead of
	// returning an error; the reserve keeps that from happening, provided
	// no other process eats it. Default 256 MiB; negative disables it.
	MinFreeBytes int64
	// MemTableBytes is the size of one Badger memtable. Default 16 MiB; two
	// are kept, so this bounds most of the write buffer's memory.
	MemTableBytes int64
	// CacheBytes is the size of each of Badger's block and index caches.
	// Default 16 MiB.
	CacheBytes int64
	// GCInterval is how often the value log is garbage collected.
	// Default 5 minutes; negative disables it.
	GCInterval time.Duration
	// Logger receives Badger's warnings and errors; nil discards them.
	Logger *slog.Logger
}

func (o *Options) setDefaults() error {
	if o.Dir == "" {
		return fmt.Errorf("badgerdb: %w: no directory given", store.ErrNoDir)
	}
	if o.MinFreeBytes == 0 {
		o.MinFreeBytes = 256 << 20
	}
	if o.MemTableBytes == 0 {
		o.MemTableBytes = 16 << 20
	}
	if o.MemTableBytes < 1<<20 {
		return fmt.Errorf("badgerdb: MemTableBytes %d is below 1 MiB", o.MemTableBytes)
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = 16 << 20
	}
	if o.GCInterval == 0 {
		o.GCInterval = 5 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// DB is a node's local database: one Badger DB in the data directory, held
// under an exclusive lock so no two processes share it. It is safe for
// concurrent use.
type DB struct {
	dir     string
	reserve int64
	// space throttles free-space checks; see CheckSpace.
	space struct {
		sync.Mutex
		written int64
		checked time.Time
		free    int64
	}
	bdb   *badger.DB
	lock  *os.File
	log   *slog.Logger
	stop  chan struct{}
	done  chan struct{}
	close sync.Once
}

// Open opens or creates the database in opts.Dir. It fails with an error
// wrapping store.ErrNoDir, store.ErrLocked or store.ErrNoSpace when the directory is missing,
// held by another process, or full.
func Open(opts Options) (*DB, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("badgerdb: data directory %s: %w", opts.Dir, err)
	}
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	db := &DB{dir: dir, reserve: opts.MinFreeBytes, lock: lock, log: opts.Logger, stop: make(chan struct{}), done: make(chan struct{})}
	if err := db.CheckSpace(0); err != nil {
		lock.Close()
		return nil, err
	}
	bo := badger.DefaultOptions(filepath.Join(dir, "db")).
		WithLogger(badgerLogger{opts.Logger}).
		WithMemTableSize(opts.MemTableBytes).
		WithNumMemtables(2).
		WithBlockCacheSize(opts.CacheBytes).
		WithIndexCacheSize(opts.CacheBytes).
		WithNumCompactors(2).
		WithValueLogFileSize(64 << 20).
		WithValueThreshold(min(1<<20, opts.MemTableBytes/8)).
		WithDetectConflicts(false).
		WithSyncWrites(true)
	if db.bdb, err = badger.Open(bo); err != nil {
		lock.Close()
		return nil, wrap("open "+dir, err)
	}
	go db.gcLoop(opts.GCInterval)
	return db, nil
}

// ensureDir creates dir if its parent exists, and checks it is a directory.
func ensureDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		parent := filepath.Dir(dir)
		if pfi, perr := os.Stat(parent); perr != nil || !pfi.IsDir() {
			return fmt.Errorf("badgerdb: data directory %s: %w: parent %s does not exist", dir, store.ErrNoDir, parent)
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			return fmt.Errorf("badgerdb: create data directory: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("badgerdb: data directory: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("badgerdb: data directory %s: %w: it is not a directory", dir, store.ErrNoDir)
	}
	return nil
}

// lockDir takes an exclusive, non-blocking lock on dir/difuse.lock and
// writes this process's id into it. The kernel drops the lock when the
// process dies, so a kill -9 never leaves a stale lock behind.
func lockDir(dir string) (*os.File, error) {
	name := filepath.Join(dir, "difuse.lock")
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, wrap("lock data directory", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		owner, _ := os.ReadFile(name)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid := strings.TrimSpace(string(owner))
			if _, perr := strconv.Atoi(pid); perr != nil {
				pid = "unknown"
			}
			return nil, fmt.Errorf("badgerdb: data directory %s: %w (pid %s)", dir, store.ErrLocked, pid)
		}
		return nil, fmt.Errorf("badgerdb: lock data directory %s: %w", dir, err)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		if err != nil {
			f.Close()
			return nil, wrap("lock data directory", err)
		}
	}
	return f, nil
}

const (
	// spaceCheckBytes and spaceCheckAge bound how much may be written, and
	// how long may pass, between two looks at the free space.
	spaceCheckBytes = 4 << 20
	spaceCheckAge   = time.Second
)

// CheckSpace accounts for n bytes about to be written to the data
// directory's file system, by the store or beside it, and fails with
// store.ErrNoSpace when the file system's free space is below the reserve. It
// calls statfs only every spaceCheckBytes or spaceCheckAge, so small writes
// stay cheap.
func (db *DB) CheckSpace(n int64) error {
	if db.reserve <= 0 {
		return nil
	}
	s := &db.space
	s.Lock()
	defer s.Unlock()
	s.written += n
	if s.written >= spaceCheckBytes || time.Since(s.checked) >= spaceCheckAge || s.free < db.reserve {
		free, err := FreeBytes(db.dir)
		if err != nil {
			return fmt.Errorf("badgerdb: data directory %s: %w", db.dir, err)
		}
		s.free, s.written, s.checked = free, 0, time.Now()
	}
	if s.free-s.written < db.reserve {
		return fmt.Errorf("badgerdb: data directory %s: %w: %d MiB free, %d MiB kept in reserve",
			db.dir, store.ErrNoSpace, s.free>>20, db.reserve>>20)
	}
	return nil
}

// FreeBytes returns the space left for unprivileged users on the file
// system that holds dir.
func FreeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// wrap adds context to err and marks a full disk with store.ErrNoSpace.
func wrap(op string, err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("badgerdb: %s: %w: %w", op, store.ErrNoSpace, err)
	}
	return fmt.Errorf("badgerdb: %s: %w", op, err)
}

// Get returns a copy of the value stored under key, or store.ErrNotFound.
func (db *DB) Get(key []byte) ([]byte, error) {
	var val []byte
	err := db.bdb.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		val, err = item.ValueCopy(nil)
		return err
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return nil, store.ErrNotFound
	case errors.Is(err, badger.ErrDBClosed):
		return nil, store.ErrClosed
	case err != nil:
		return nil, wrap("get", err)
	}
	return val, nil
}

// Size returns the size of the value stored under key without reading it,
// or store.ErrNotFound. For a value Badger keeps in its value log (over 1 MiB)
// the size is estimated from the log's pointer, within a few bytes.
func (db *DB) Size(key []byte) (int64, error) {
	var n int64
	err := db.bdb.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		n = item.ValueSize()
		return nil
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return 0, store.ErrNotFound
	case errors.Is(err, badger.ErrDBClosed):
		return 0, store.ErrClosed
	case err != nil:
		return 0, wrap("size", err)
	}
	return n, nil
}

// ScanSizes calls fn for every key with the given prefix, in ascending key
// order, with the size of its value as Size gives it, without reading the
// value; it stops at fn's first error and returns it. key is valid only
// until fn returns.
func (db *DB) ScanSizes(prefix []byte, fn func(key []byte, size int64) error) error {
	err := db.bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			item := it.Item()
			if err := fn(item.Key(), item.ValueSize()); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, badger.ErrDBClosed) {
		return store.ErrClosed
	}
	return err
}

// Update applies the writes fn makes atomically: all of them or none.
// They are durable when it returns: Badger syncs its logs before it
// answers, once for the writes of every Update it gathered meanwhile.
func (db *DB) Update(fn func(w store.Writer) error) error {
	w := &txnWriter{}
	err := db.bdb.Update(func(txn *badger.Txn) error {
		w.txn = txn
		if err := fn(w); err != nil {
			return err
		}
		return db.CheckSpace(w.bytes)
	})
	switch {
	case errors.Is(err, badger.ErrDBClosed):
		return store.ErrClosed
	case errors.Is(err, store.ErrNoSpace):
		return err
	case err != nil:
		return wrap("update", err)
	}
	return nil
}

// txnWriter counts the bytes an update writes, for CheckSpace.
type txnWriter struct {
	txn   *badger.Txn
	bytes int64
}

func (w *txnWriter) Set(key, val []byte) error {
	w.bytes += int64(len(key) + len(val))
	return w.txn.Set(key, val)
}

func (w *txnWriter) Delete(key []byte) error {
	w.bytes += int64(len(key))
	return w.txn.Delete(key)
}

// Scan calls fn for every key with the given prefix, in ascending key order,
// until fn returns an error, which Scan then returns. key and val are valid
// only until fn returns.
func (db *DB) Scan(prefix []byte, fn func(key, val []byte) error) error {
	return db.ScanFrom(prefix, prefix, fn)
}

// ScanFrom is Scan, starting at the first key at or after from.
func (db *DB) ScanFrom(prefix, from []byte, fn func(key, val []byte) error) error {
	if bytes.Compare(from, prefix) < 0 {
		from = prefix
	}
	err := db.bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
		defer it.Close()
		var val []byte
		for it.Seek(from); it.ValidForPrefix(prefix); it.Next() {
			item := it.Item()
			var err error
			if val, err = item.ValueCopy(val[:0]); err != nil {
				return wrap("scan", err)
			}
			if err := fn(item.Key(), val); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, badger.ErrDBClosed) {
		return store.ErrClosed
	}
	return err
}

// Sync makes every write that Update has returned from durable. Every
// Update is durable when it returns (Badger syncs its write-ahead log and
// value log before it answers, once for all the writes it gathered in
// the meantime), so there is nothing left to do but report a closed
// store. Badger's own Sync would not do: it syncs the active memtable's
// log and the newest value log file only, not a memtable a concurrent
// write rotated out before it was synced.
func (db *DB) Sync() error {
	if db.bdb.IsClosed() {
		return store.ErrClosed
	}
	return nil
}

// Stats describes the database's size on disk: the space its files take,
// not their lengths (Badger's open logs are sparse files).
type Stats struct {
	// LSMBytes is the space of the LSM tree's tables.
	LSMBytes int64 `json:"lsm_bytes"`
	// VlogBytes is the space of the value log and the memtables' logs.
	VlogBytes int64 `json:"vlog_bytes"`
	// FreeBytes is the space left on the data directory's file system.
	FreeBytes int64 `json:"free_bytes"`
}

// Stats returns the database's current size and the free space left. It
// reads the directory: Badger's own figures lag by up to a minute.
func (db *DB) Stats() Stats {
	var st Stats
	dir := filepath.Join(db.dir, "db")
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		var fi syscall.Stat_t
		if syscall.Stat(filepath.Join(dir, e.Name()), &fi) != nil {
			continue // compacted away meanwhile
		}
		switch filepath.Ext(e.Name()) {
		case ".sst":
			st.LSMBytes += fi.Blocks * 512
		case ".vlog", ".mem":
			st.VlogBytes += fi.Blocks * 512
		}
	}
	st.FreeBytes, _ = FreeBytes(db.dir)
	return st
}

// Dir returns the absolute path of the data directory.
func (db *DB) Dir() string { return db.dir }

// gcLoop garbage collects the value log every interval until Close.
func (db *DB) gcLoop(interval time.Duration) {
	defer close(db.done)
	if interval < 0 {
		<-db.stop
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-db.stop:
			return
		case <-t.C:
			for db.bdb.RunValueLogGC(0.5) == nil {
			}
		}
	}
}

// Close flushes and closes the database and releases the directory lock.
// It is safe to call more than once; later calls return nil.
func (db *DB) Close() error {
	var err error
	db.close.Do(func() {
		close(db.stop)
		<-db.done
		err = db.bdb.Close()
		if lerr := db.lock.Close(); err == nil {
			err = lerr
		}
		if err != nil {
			err = wrap("close", err)
		}
	})
	return err
}

// badgerLogger sends Badger's log lines to slog. Badger's info lines are
// routine (compactions, replay progress), so they go out at debug level.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any)   { l.emit(slog.LevelError, f, a) }
func (l badgerLogger) Warningf(f string, a ...any) { l.emit(slog.LevelWarn, f, a) }
func (l badgerLogger) Infof(f string, a ...any)    { l.emit(slog.LevelDebug, f, a) }
func (l badgerLogger) Debugf(f string, a ...any)   { l.emit(slog.LevelDebug, f, a) }

// emit formats a message only for a level the logger keeps: Badger logs
// at debug level on every write.
func (l badgerLogger) emit(level slog.Level, f string, a []any) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	l.log.Log(ctx, level, string(bytes.TrimSpace(fmt.Appendf(nil, f, a...))), "component", "badger")
}
