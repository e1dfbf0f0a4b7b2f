package txlog

import "fmt"

// The key-value store users address over HTTP and gRPC keeps each key in a
// partition of its own, as the partition's single record, named "".

// KVRecord is the name of a key's record in its partition.
const KVRecord = ""

// kvPrefix starts the name of every key-value partition.
const kvPrefix = "kv/"

// KVPartition returns the partition that holds a key-value key. A key is a
// non-empty UTF-8 string of at most MaxNameBytes-3 bytes; any other is
// refused with ErrBadRequest.
func KVPartition(key string) (string, error) {
	if key == "" {
		return "", fmt.Errorf("%w: empty key", ErrBadRequest)
	}
	p := kvPrefix + key
	if err := checkName("key", p, false); err != nil {
		return "", err
	}
	return p, nil
}
