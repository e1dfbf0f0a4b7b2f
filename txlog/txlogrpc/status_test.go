package txlogrpc

import (
	"errors"
	"fmt"
	"testing"
)

// Every txlog error, and a full disk, keeps its identity across the wire.
func TestErrorsRoundTrip(t *testing.T) {
	for _, k := range errorKinds {
		err := FromStatus("h1", ToStatus(fmt.Errorf("context: %w", k.err)))
		if !errors.Is(err, k.err) {
			t.Errorf("%v came back as %v", k.err, err)
		}
	}
	if err := FromStatus("h1", ToStatus(errors.New("plain"))); err == nil {
		t.Error("a plain error came back nil")
	}
}
