package collector

import (
	"cmp"
	"slices"
	"sort"
	"time"
)

// The window index: every distinct ban event in time order (banEvents), one
// cursor per trailing window at the first ban event inside it, and the
// per-series counts of each window. mergeBanEvents takes in the ban events
// of new bans rows; advance moves the cursors as time passes.

// banEvent is one distinct ban event (jail, ip, timeofban) in time order,
// for the trailing windows. Exact duplicate rows of bans (fail2ban writes
// some bans twice) share one banEvent: count is the number of bans rows.
// With the archive on, kept ban events are archived history: they stay
// counted after their rows left bans (purge, unbanip) until they leave the
// longest window, and hold a reference of their own on their IP. A ban event
// neither counted nor kept is dead and dropped at the next compaction.
// fromArchive marks a ban event loaded from the archive at start: a row of
// bans with the same ban event is not offered to the archive again.
type banEvent struct {
	timeOfBan   uint32
	ip          uint32
	count       uint32
	jail        uint16
	kept        bool
	fromArchive bool
}

// alive reports whether t counts in the windows.
func (t *banEvent) alive() bool { return t.count > 0 || t.kept }

func compareBanEvents(a, b *banEvent) int {
	if c := cmp.Compare(a.timeOfBan, b.timeOfBan); c != 0 {
		return c
	}
	if c := cmp.Compare(a.jail, b.jail); c != 0 {
		return c
	}
	return cmp.Compare(a.ip, b.ip)
}

// searchBanEvent finds key in banEvents like a binary search, but gallops out from
// the position of the previous search first: rows of bans come in rowid
// order, which is nearly timeofban order, so consecutive searches land
// close together and touch a few cache lines instead of twenty.
func (e *engine) searchBanEvent(key *banEvent) (int, bool) {
	n := len(e.banEvents)
	lo, hi := 0, n
	if h := e.searchHint; h < n {
		if compareBanEvents(&e.banEvents[h], key) <= 0 {
			// banEvents[lo] <= key; find hi with key < banEvents[hi].
			lo = h
			for step := 1; lo+step < n; step *= 2 {
				if compareBanEvents(&e.banEvents[lo+step], key) > 0 {
					hi = lo + step
					break
				}
				lo += step
			}
		} else {
			// key < banEvents[hi]; find lo with banEvents[lo] <= key.
			hi = h
			for step := 1; hi-step >= 0; step *= 2 {
				if compareBanEvents(&e.banEvents[hi-step], key) <= 0 {
					lo = hi - step
					break
				}
				hi -= step
			}
		}
	}
	i, found := slices.BinarySearchFunc(e.banEvents[lo:hi], key, func(a banEvent, b *banEvent) int { return compareBanEvents(&a, b) })
	e.searchHint = lo + i
	return lo + i, found
}

// searchLoadedEvent finds the ban event (timeOfBan, jail) of the IP whose
// key is key, comparing keys in ips rather than looking the IP up: the
// entries of one time and jail are next to each other, nearly always one.
func (e *engine) searchLoadedEvent(timeOfBan uint32, jail uint16, key ipKey) (int, bool) {
	i, _ := e.searchBanEvent(&banEvent{timeOfBan: timeOfBan, jail: jail})
	for ; i < len(e.banEvents); i++ {
		t := &e.banEvents[i]
		if t.timeOfBan != timeOfBan || t.jail != jail {
			return i, false
		}
		if e.ipRefs[t.ip] > 0 && e.ips[t.ip].key == key {
			return i, true
		}
	}
	return i, false
}

// dropKept ends a kept entry without rows that left the longest window.
func (e *engine) dropKept(t *banEvent) {
	t.kept = false
	e.deadBanEvents++
	e.releaseIP(t.ip)
}

func (e *engine) inWindow(w int, timeOfBan, now int64) bool {
	return timeOfBan >= now-int64(e.windows[w].Length/time.Second)
}

func (e *engine) decWindow(w int, jc seriesKey) {
	e.changes[familyRecent]++
	m := e.windowCount[w]
	if m[jc]--; m[jc] <= 0 {
		delete(m, jc)
	}
}

// mergeBanEvents merges newBanEvents into banEvents. Only the entries of banEvents not older
// than the oldest new event move: they are copied aside and merged with the
// sorted batch back into place, so a batch costs O(m log m + k) where k is
// the number of stored entries newer than the batch's oldest — small, since
// new bans are recent — rather than O(n) for the whole slice. Events that
// become distinct (count 0 → 1) are counted in their windows and, past the
// initial load, in bans_total.
func (e *engine) mergeBanEvents(now int64) {
	if len(e.newBanEvents) == 0 {
		return
	}
	added := e.newBanEvents
	for k := range added {
		t := &added[k]
		e.ipFirstEvent[t.ip] = min(e.ipFirstEvent[t.ip], t.timeOfBan)
	}
	slices.SortFunc(added, func(a, b banEvent) int { return compareBanEvents(&a, &b) })
	// Fold duplicates within the batch.
	folded := added[:1]
	for _, t := range added[1:] {
		if last := &folded[len(folded)-1]; compareBanEvents(last, &t) == 0 {
			last.count += t.count
			last.fromArchive = last.fromArchive || t.fromArchive
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
				e.ipRefs[t.ip]++
			}
		}
	}
	born := e.mergeBorn[:0] // entries that start counting
	n := len(e.banEvents)
	p := sort.Search(n, func(i int) bool { return compareBanEvents(&e.banEvents[i], &added[0]) >= 0 })
	if p == n {
		e.banEvents = append(e.banEvents, added...)
		born = append(born, added...)
	} else {
		tail := append(e.mergeTail[:0], e.banEvents[p:]...)
		out := e.banEvents[:p]
		i, j := 0, 0
		for i < len(tail) || j < len(added) {
			var c int
			switch {
			case i == len(tail):
				c = 1
			case j == len(added):
				c = -1
			default:
				c = compareBanEvents(&tail[i], &added[j])
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
					e.deadBanEvents--
				}
				t.count += added[j].count
				if added[j].fromArchive && !t.fromArchive {
					t.fromArchive = true
					e.fromArchive++
				}
				if added[j].kept {
					e.foldKept(&t)
				}
				out = append(out, t)
				i++
				j++
			}
		}
		e.banEvents = out
		e.mergeTail = keepBuffer(tail)
	}
	e.newBanEvents = keepBuffer(e.newBanEvents)
	for _, t := range born {
		if t.fromArchive {
			e.fromArchive++
		}
		jc := seriesKey{jail: t.jail, country: e.ips[t.ip].country}
		for w := range e.windows {
			if e.inWindow(w, int64(t.timeOfBan), now) {
				e.windowCount[w][jc]++
				e.changes[familyRecent]++
			}
		}
		if e.live {
			addr := e.ips[t.ip].key.addr()
			if _, ok := e.reread[banEventKey{addr: addr, timeOfBan: t.timeOfBan, jail: t.jail}]; !ok {
				e.pending = append(e.pending, pendingBan{addr: addr, jail: t.jail, since: now})
			}
		}
	}
	e.mergeBorn = keepBuffer(born)
	e.resetCursors(now)
}

// foldKept makes t kept when a kept entry of the same event folds into it:
// the folded entry's reference on the IP moves to t, or is released when t
// holds one already.
func (e *engine) foldKept(t *banEvent) {
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

// resetCursors places every window's cursor at the first ban event inside it.
func (e *engine) resetCursors(now int64) {
	for w := range e.windows {
		limit := now - int64(e.windows[w].Length/time.Second)
		e.cursors[w] = sort.Search(len(e.banEvents), func(i int) bool { return int64(e.banEvents[i].timeOfBan) >= limit })
	}
}

func (e *engine) recountWindows(now int64) {
	e.changes[familyRecent]++
	e.resetCursors(now)
	e.countWindows()
}

// maxDenseSeries bounds the dense array countWindows counts a window in
// (jails × countries); beyond it, it counts in the window's map directly.
const maxDenseSeries = 1 << 16

// countWindows counts every window's series again from the ban events at
// and after its cursor. It counts into a dense array indexed by (jail,
// country), an increment per ban event rather than a map update, and
// fills the window's map from it.
func (e *engine) countWindows() {
	nc := len(e.countryNames)
	size := len(e.jailNames) * nc
	var dense []int
	if size <= maxDenseSeries {
		dense = make([]int, size)
	}
	for w := range e.windows {
		m := e.windowCount[w]
		clear(m)
		if dense == nil {
			for i := e.cursors[w]; i < len(e.banEvents); i++ {
				if t := &e.banEvents[i]; t.alive() {
					m[seriesKey{jail: t.jail, country: e.ips[t.ip].country}]++
				}
			}
			continue
		}
		clear(dense)
		for i := e.cursors[w]; i < len(e.banEvents); i++ {
			if t := &e.banEvents[i]; t.alive() {
				dense[int(t.jail)*nc+int(e.ips[t.ip].country)]++
			}
		}
		for k, n := range dense {
			if n > 0 {
				m[seriesKey{jail: uint16(k / nc), country: uint16(k % nc)}] = n
			}
		}
	}
}
