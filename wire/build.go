package wire

import flatbuffers "github.com/google/flatbuffers/go"

// TableVector adds to b a vector of the tables at offs, in order, and
// returns the vector's offset.
func TableVector(b *flatbuffers.Builder, offs []flatbuffers.UOffsetT) flatbuffers.UOffsetT {
	b.StartVector(flatbuffers.SizeUOffsetT, len(offs), flatbuffers.SizeUOffsetT)
	for i := len(offs) - 1; i >= 0; i-- {
		b.PrependUOffsetT(offs[i])
	}
	return b.EndVector(len(offs))
}

// StringVector adds to b a vector of the strings ss, in order, and returns
// the vector's offset.
func StringVector(b *flatbuffers.Builder, ss []string) flatbuffers.UOffsetT {
	offs := make([]flatbuffers.UOffsetT, len(ss))
	for i, s := range ss {
		offs[i] = b.CreateString(s)
	}
	return TableVector(b, offs)
}
