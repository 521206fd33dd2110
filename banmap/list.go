package banmap

// The list of banned pairs behind the admin API: one compact entry per
// (jail, IP) pair, sorted by (jail, country, time of ban newest first, IP)
// so that every (jail, country) is one contiguous run. A page merges the
// runs its filter selects, newest first, starting after the cursor: a few
// binary searches and limit steps of a heap, whatever the list's size.

import (
	"bytes"
	"cmp"
	"container/heap"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"sort"

	"github.com/bangui/bangui_exporter/collector"
)

// entry is one banned pair: 32 bytes, no pointers.
type entry struct {
	ip        [16]byte
	timeOfBan uint32
	bantime   int32 // seconds; -1 permanent; clamped to int32
	bancount  uint32
	jail      uint16 // index into banList.jails
	country   uint16 // index into banList.countries
}

// run is the entries of one (jail, country), entries[lo:hi].
type run struct {
	jail, country uint16
	lo, hi        int
}

type banList struct {
	jails     []string // sorted
	countries []string // sorted
	entries   []entry
	runs      []run
	// order lists the entries in the total order (time of ban newest
	// first, jail, IP), so a page without a filter is one binary search
	// and limit steps rather than a merge of every run.
	order     []uint32
	byCountry map[string]int
}

type listBuilder struct {
	jails     map[string]uint16
	countries map[string]uint16
	jailNames []string
	ctyNames  []string
	entries   []entry
}

func newListBuilder(capacity int) listBuilder {
	return listBuilder{jails: map[string]uint16{}, countries: map[string]uint16{}, entries: make([]entry, 0, capacity)}
}

func intern(m map[string]uint16, names *[]string, s string) uint16 {
	if i, ok := m[s]; ok {
		return i
	}
	if len(*names) > math.MaxUint16 {
		return 0
	}
	i := uint16(len(*names))
	*names = append(*names, s)
	m[s] = i
	return i
}

func (lb *listBuilder) add(p *collector.BannedIP) {
	bt := p.Bantime
	bt = max(min(bt, math.MaxInt32), math.MinInt32)
	bc := max(min(p.Bancount, math.MaxUint32), 0)
	lb.entries = append(lb.entries, entry{
		ip:        p.IP,
		timeOfBan: uint32(max(min(p.TimeOfBan, math.MaxUint32), 0)),
		bantime:   int32(bt),
		bancount:  uint32(bc),
		jail:      intern(lb.jails, &lb.jailNames, p.Jail),
		country:   intern(lb.countries, &lb.ctyNames, p.Country),
	})
}

// finish renumbers jails and countries in name order and sorts the entries.
func (lb *listBuilder) finish() *banList {
	l := &banList{jails: slices.Sorted(mapsKeys(lb.jails)), countries: slices.Sorted(mapsKeys(lb.countries)), byCountry: map[string]int{}}
	jailMap := make([]uint16, len(lb.jailNames))
	for i, n := range lb.jailNames {
		jailMap[i] = uint16(sort.SearchStrings(l.jails, n))
	}
	ctyMap := make([]uint16, len(lb.ctyNames))
	for i, n := range lb.ctyNames {
		ctyMap[i] = uint16(sort.SearchStrings(l.countries, n))
	}
	for i := range lb.entries {
		e := &lb.entries[i]
		e.jail, e.country = jailMap[e.jail], ctyMap[e.country]
	}
	slices.SortFunc(lb.entries, func(x, y entry) int {
		return cmp.Or(cmp.Compare(x.jail, y.jail), cmp.Compare(x.country, y.country), compareInRun(&x, &y))
	})
	l.entries = slices.Clip(lb.entries)
	for i := 0; i < len(l.entries); {
		j := i
		for j < len(l.entries) && l.entries[j].jail == l.entries[i].jail && l.entries[j].country == l.entries[i].country {
			j++
		}
		r := run{jail: l.entries[i].jail, country: l.entries[i].country, lo: i, hi: j}
		l.runs = append(l.runs, r)
		l.byCountry[l.countries[r.country]] += j - i
		i = j
	}
	l.order = make([]uint32, len(l.entries))
	for i := range l.order {
		l.order[i] = uint32(i)
	}
	slices.SortFunc(l.order, func(a, b uint32) int { return l.compareTotal(&l.entries[a], &l.entries[b]) })
	return l
}

// compareTotal is the list's total order: newest first, then jail (indices
// follow name order), then IP.
func (l *banList) compareTotal(x, y *entry) int {
	return cmp.Or(cmp.Compare(y.timeOfBan, x.timeOfBan), cmp.Compare(x.jail, y.jail), bytes.Compare(x.ip[:], y.ip[:]))
}

func mapsKeys(m map[string]uint16) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// compareInRun orders a run: newest first, then by IP.
func compareInRun(x, y *entry) int {
	return cmp.Or(cmp.Compare(y.timeOfBan, x.timeOfBan), bytes.Compare(x.ip[:], y.ip[:]))
}

// position is a place in the list's total order (time of ban newest first,
// jail name, IP); a cursor is the position of the last entry of a page.
type position struct {
	timeOfBan uint32
	jail      string
	ip        [16]byte
}

func comparePos(x, y *position) int {
	return cmp.Or(cmp.Compare(y.timeOfBan, x.timeOfBan), cmp.Compare(x.jail, y.jail), bytes.Compare(x.ip[:], y.ip[:]))
}

const cursorVersion = 1

// encodeCursor makes a position opaque: version, time of ban, IP, jail.
func encodeCursor(p position) string {
	b := make([]byte, 0, 1+4+16+len(p.jail))
	b = append(b, cursorVersion)
	b = binary.BigEndian.AppendUint32(b, p.timeOfBan)
	b = append(b, p.ip[:]...)
	b = append(b, p.jail...)
	return base64.RawURLEncoding.EncodeToString(b)
}

var errBadCursor = errors.New("invalid cursor")

func decodeCursor(s string) (position, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 1+4+16 || b[0] != cursorVersion {
		return position{}, errBadCursor
	}
	var p position
	p.timeOfBan = binary.BigEndian.Uint32(b[1:5])
	copy(p.ip[:], b[5:21])
	p.jail = string(b[21:])
	return p, nil
}

// query selects a page: entries of jail (all when "") and country (all
// when ""), after the cursor (from the start when nil), at most limit; more
// tells whether entries follow the page. total counts the filter's entries.
func (l *banList) query(jail, country string, after *position, limit int) (page []entry, more bool, total int) {
	jailIdx, countryIdx := -1, -1
	if jail != "" {
		i := sort.SearchStrings(l.jails, jail)
		if i == len(l.jails) || l.jails[i] != jail {
			return nil, false, 0
		}
		jailIdx = i
	}
	if country != "" {
		i := sort.SearchStrings(l.countries, country)
		if i == len(l.countries) || l.countries[i] != country {
			return nil, false, 0
		}
		countryIdx = i
	}
	if jailIdx < 0 && countryIdx < 0 {
		return l.queryAll(after, limit)
	}
	h := &runHeap{list: l}
	for _, r := range l.runs {
		if (jailIdx >= 0 && int(r.jail) != jailIdx) || (countryIdx >= 0 && int(r.country) != countryIdx) {
			continue
		}
		total += r.hi - r.lo
		lo := r.lo
		if after != nil {
			jailName := l.jails[r.jail]
			lo = r.lo + sort.Search(r.hi-r.lo, func(k int) bool {
				e := &l.entries[r.lo+k]
				p := position{timeOfBan: e.timeOfBan, jail: jailName, ip: e.ip}
				return comparePos(&p, after) > 0
			})
		}
		if lo < r.hi {
			h.cur = append(h.cur, cursorRun{next: lo, hi: r.hi})
		}
	}
	heap.Init(h)
	for h.Len() > 0 && len(page) <= limit {
		top := &h.cur[0]
		if len(page) == limit {
			more = true
			break
		}
		page = append(page, l.entries[top.next])
		top.next++
		if top.next == top.hi {
			heap.Pop(h)
		} else {
			heap.Fix(h, 0)
		}
	}
	return page, more, total
}

// queryAll is query without a filter, on the total order.
func (l *banList) queryAll(after *position, limit int) (page []entry, more bool, total int) {
	start := 0
	if after != nil {
		start = sort.Search(len(l.order), func(k int) bool {
			p := l.pos(&l.entries[l.order[k]])
			return comparePos(&p, after) > 0
		})
	}
	end := min(start+limit, len(l.order))
	page = make([]entry, 0, end-start)
	for _, i := range l.order[start:end] {
		page = append(page, l.entries[i])
	}
	return page, end < len(l.order), len(l.entries)
}

func (l *banList) pos(e *entry) position {
	return position{timeOfBan: e.timeOfBan, jail: l.jails[e.jail], ip: e.ip}
}

type cursorRun struct{ next, hi int }

// runHeap merges runs by the list's total order.
type runHeap struct {
	list *banList
	cur  []cursorRun
}

func (h *runHeap) Len() int { return len(h.cur) }
func (h *runHeap) Less(i, j int) bool {
	a, b := &h.list.entries[h.cur[i].next], &h.list.entries[h.cur[j].next]
	return h.list.compareTotal(a, b) < 0
}
func (h *runHeap) Swap(i, j int) { h.cur[i], h.cur[j] = h.cur[j], h.cur[i] }
func (h *runHeap) Push(x any)    { h.cur = append(h.cur, x.(cursorRun)) }
func (h *runHeap) Pop() any {
	old := h.cur
	x := old[len(old)-1]
	h.cur = old[:len(old)-1]
	return x
}
