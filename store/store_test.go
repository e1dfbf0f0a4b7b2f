package store_test

import (
	"testing"

	"github.com/difuse/difuse/store"
	"github.com/difuse/difuse/store/storetest"
)

func TestMemSuite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.KV { return store.NewMem() })
}
