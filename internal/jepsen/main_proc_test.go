package jepsen

import (
	"testing"

	"github.com/difuse/difuse/internal/proctest"
)

// TestMain removes the binaries the tests built once they are done.
func TestMain(m *testing.M) { proctest.Main(m) }
