package geo

// interner16 stores each distinct string once and hands out 16-bit indexes
// (country names, messages, provider names: a few hundred values). Index 0
// is the empty string. When full, new strings map to 0.
type interner16 struct {
	strs []string
	idx  map[string]uint16
}

func newInterner16() interner16 {
	return interner16{strs: []string{""}, idx: map[string]uint16{"": 0}}
}

func (in *interner16) intern(s string) uint16 {
	if i, ok := in.idx[s]; ok {
		return i
	}
	if len(in.strs) > int(^uint16(0)) {
		return 0
	}
	i := uint16(len(in.strs))
	in.strs = append(in.strs, s)
	in.idx[s] = i
	return i
}

// lookup returns s's index without adding it (0 when absent).
func (in *interner16) lookup(s string) uint16 { return in.idx[s] }

func (in *interner16) get(i uint16) string {
	if int(i) < len(in.strs) {
		return in.strs[i]
	}
	return ""
}

// interner32 is interner16 with 32-bit indexes (ASN/organisation strings:
// up to about a hundred thousand values).
type interner32 struct {
	strs []string
	idx  map[string]uint32
}

func newInterner32() interner32 {
	return interner32{strs: []string{""}, idx: map[string]uint32{"": 0}}
}

func (in *interner32) intern(s string) uint32 {
	if i, ok := in.idx[s]; ok {
		return i
	}
	i := uint32(len(in.strs))
	in.strs = append(in.strs, s)
	in.idx[s] = i
	return i
}

func (in *interner32) get(i uint32) string {
	if int(i) < len(in.strs) {
		return in.strs[i]
	}
	return ""
}
