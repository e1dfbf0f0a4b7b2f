package node

import "github.com/difuse/difuse/store/badgerdb"

// LearnedHosts returns the members a node in dir learned of before it
// joined; the node must be stopped.
func LearnedHosts(dir string) ([]string, error) {
	var hosts []string
	err := withStore(dir, func(n *Node) (err error) {
		hosts, err = n.loadHosts(learnedKey)
		return err
	})
	return hosts, err
}

// SeedLearned makes a stopped node in dir hold hosts as the members it
// learned of on an earlier attempt to join.
func SeedLearned(dir string, hosts []string) error {
	return withStore(dir, func(n *Node) error { return n.saveHosts(learnedKey, hosts) })
}

func withStore(dir string, fn func(*Node) error) error {
	db, err := badgerdb.Open(badgerdb.Options{Dir: dir, MinFreeBytes: -1})
	if err != nil {
		return err
	}
	err = fn(&Node{db: db})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}
