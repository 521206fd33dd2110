package collector

import (
	"cmp"
	"slices"
	"sort"
	"time"
)

// tobEntry is one distinct ban event (jail, ip, timeofban) in time order,
// for the trailing windows. Exact duplicate rows (fail2ban issue 1844) share
// one entry: count is the number of rows. With the archive on, kept entries
// are archived history: they stay counted after their rows left bans (purge,
// unbanip) until they leave the longest window, and hold a reference of
// their own on their IP. An entry neither counted nor kept is dead and
// dropped at the next compaction. stored marks an event loaded from the
// archive at start: a row of bans with the same event is not offered to the
// archive again.
type tobEntry struct {
	tob    uint32
	ip     uint32
	count  uint32
	jail   uint16
	kept   bool
	stored bool
}

// alive reports whether t counts in the windows.
func (t *tobEntry) alive() bool { return t.count > 0 || t.kept }

func compareTob(a, b *tobEntry) int {
	if c := cmp.Compare(a.tob, b.tob); c != 0 {
		return c
	}
	if c := cmp.Compare(a.jail, b.jail); c != 0 {
		return c
	}
	return cmp.Compare(a.ip, b.ip)
}

// searchTob finds key in byTob like a binary search, but gallops out from
// the position of the previous search first: rows of bans come in rowid
// order, which is nearly timeofban order, so consecutive searches land
// close together and touch a few cache lines instead of twenty.
func (e *engine) searchTob(key *tobEntry) (int, bool) {
	n := len(e.byTob)
	lo, hi := 0, n
	if h := e.tobHint; h < n {
		if compareTob(&e.byTob[h], key) <= 0 {
			// byTob[lo] <= key; find hi with key < byTob[hi].
			lo = h
			for step := 1; lo+step < n; step *= 2 {
				if compareTob(&e.byTob[lo+step], key) > 0 {
					hi = lo + step
					break
				}
				lo += step
			}
		} else {
			// key < byTob[hi]; find lo with byTob[lo] <= key.
			hi = h
			for step := 1; hi-step >= 0; step *= 2 {
				if compareTob(&e.byTob[hi-step], key) <= 0 {
					lo = hi - step
					break
				}
				hi -= step
			}
		}
	}
	i, found := slices.BinarySearchFunc(e.byTob[lo:hi], key, func(a tobEntry, b *tobEntry) int { return compareTob(&a, b) })
	e.tobHint = lo + i
	return lo + i, found
}

// dropKept ends a kept entry without rows that left the longest window.
func (e *engine) dropKept(t *tobEntry) {
	t.kept = false
	e.deadTob++
	e.releaseIP(t.ip)
}

func (e *engine) inWindow(w int, tob, now int64) bool {
	return tob >= now-int64(e.windows[w].Length/time.Second)
}

func (e *engine) decWindow(w int, jc jcKey) {
	m := e.windowCount[w]
	if m[jc]--; m[jc] <= 0 {
		delete(m, jc)
	}
}

// mergeTob merges newTob into byTob. Only the entries of byTob not older
// than the oldest new event move: they are copied aside and merged with the
// sorted batch back into place, so a batch costs O(m log m + k) where k is
// the number of stored entries newer than the batch's oldest — small, since
// new bans are recent — rather than O(n) for the whole slice. Events that
// become distinct (count 0 → 1) are counted in their windows and, past the
// initial load, in bans_total.
func (e *engine) mergeTob(now int64) {
	if len(e.newTob) == 0 {
		return
	}
	added := e.newTob
	slices.SortFunc(added, func(a, b tobEntry) int { return compareTob(&a, &b) })
	// Fold duplicates within the batch.
	folded := added[:1]
	for _, t := range added[1:] {
		if last := &folded[len(folded)-1]; compareTob(last, &t) == 0 {
			last.count += t.count
			last.stored = last.stored || t.stored
			if t.kept {
				e.foldKept(last)
			}
		} else {
			folded = append(folded, t)
		}
	}
	added = folded
	if e.keep {
		// With the archive on every counted event is archived history:
		// its entry is kept and holds its own reference on the IP.
		for k := range added {
			if t := &added[k]; !t.kept {
				t.kept = true
				e.ips[t.ip].refs++
			}
		}
	}
	born := e.born[:0] // entries that start counting
	n := len(e.byTob)
	p := sort.Search(n, func(i int) bool { return compareTob(&e.byTob[i], &added[0]) >= 0 })
	if p == n {
		e.byTob = append(e.byTob, added...)
		born = append(born, added...)
	} else {
		tail := append(e.tobTail[:0], e.byTob[p:]...)
		out := e.byTob[:p]
		i, j := 0, 0
		for i < len(tail) || j < len(added) {
			var c int
			switch {
			case i == len(tail):
				c = 1
			case j == len(added):
				c = -1
			default:
				c = compareTob(&tail[i], &added[j])
			}
			switch {
			case c < 0:
				out = append(out, tail[i])
				i++
			case c > 0:
				out = append(out, added[j])
				born = append(born, added[j])
				j++
			default:
				t := tail[i]
				if !t.alive() {
					born = append(born, added[j])
					e.deadTob--
				}
				t.count += added[j].count
				if added[j].stored && !t.stored {
					t.stored = true
					e.stored++
				}
				if added[j].kept {
					e.foldKept(&t)
				}
				out = append(out, t)
				i++
				j++
			}
		}
		e.byTob = out
		e.tobTail = keepBuffer(tail)
	}
	e.newTob = keepBuffer(e.newTob)
	for _, t := range born {
		if t.stored {
			e.stored++
		}
		jc := jcKey{jail: t.jail, country: e.ips[t.ip].country}
		for w := range e.windows {
			if e.inWindow(w, int64(t.tob), now) {
				e.windowCount[w][jc]++
			}
		}
		if e.live {
			addr := e.ips[t.ip].key.addr()
			if _, ok := e.reread[eventKey{addr: addr, tob: t.tob, jail: t.jail}]; !ok {
				e.pending = append(e.pending, pendingBan{addr: addr, jail: t.jail, since: now})
			}
		}
	}
	e.born = keepBuffer(born)
	e.resetCursors(now)
}

// foldKept makes t kept when a kept entry of the same event folds into it:
// the folded entry's reference on the IP moves to t, or is released when t
// holds one already.
func (e *engine) foldKept(t *tobEntry) {
	if t.kept {
		e.releaseIP(t.ip)
		return
	}
	t.kept = true
}

// keepBuffer empties a scratch buffer for reuse, unless it grew large (an
// initial load or a batch far in the past): that memory goes back to the
// garbage collector.
func keepBuffer[T any](buf []T) []T {
	if cap(buf) > 1<<16 {
		return nil
	}
	return buf[:0]
}

// resetCursors places every window's cursor at the first event inside it.
func (e *engine) resetCursors(now int64) {
	for w := range e.windows {
		limit := now - int64(e.windows[w].Length/time.Second)
		e.cursors[w] = sort.Search(len(e.byTob), func(i int) bool { return int64(e.byTob[i].tob) >= limit })
	}
}

func (e *engine) recountWindows(now int64) {
	e.resetCursors(now)
	for w := range e.windows {
		clear(e.windowCount[w])
		for i := e.cursors[w]; i < len(e.byTob); i++ {
			if t := &e.byTob[i]; t.alive() {
				e.windowCount[w][jcKey{jail: t.jail, country: e.ips[t.ip].country}]++
			}
		}
	}
}
