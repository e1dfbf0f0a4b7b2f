package level

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	for _, l := range []Level{Quorum, All, Leader, Lazy} {
		got, err := Parse(l.String(), Quorum)
		if err != nil || got != l || !l.Valid() {
			t.Errorf("Parse(%s) = %s, %v", l, got, err)
		}
	}
	if got, err := Parse("", Leader); err != nil || got != Leader {
		t.Errorf("Parse of nothing = %s, %v, want the default", got, err)
	}
	if got, _ := Parse("ALL", Quorum); got != All {
		t.Errorf("Parse is case-sensitive")
	}
	if _, err := Parse("sometimes", Quorum); !errors.Is(err, ErrUnknown) {
		t.Errorf("Parse of an unknown name: %v", err)
	}
	if Level(7).Valid() || Level(7).String() != "level(7)" {
		t.Errorf("Level(7) = %s, valid %v", Level(7), Level(7).Valid())
	}
}
