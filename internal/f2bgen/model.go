package f2bgen

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
)

// pair is one (ip, jail) combination: one bips row.
type pair struct {
	ip   int32 // index into model.ips
	jail int16 // index into spec.Jails
}

// event is one row of bans.
type event struct {
	insertAt  int64 // when fail2ban wrote the row (the table's row order)
	timeofban int64
	bantime   int64
	pair      int32
	bancount  int32
	manual    bool
	duplicate bool
}

// model is the whole generated history in memory, before it is written.
type model struct {
	spec   Spec
	ips    []netip.Addr
	ipText []string
	pairs  []pair
	// events in insertion (rowid) order.
	events []event
	// lastEvent[p] is the index in events of pair p's bips row: the last
	// row inserted for it, as INSERT OR REPLACE leaves it.
	lastEvent []int32
}

// buildModel draws the history for a spec that went through withDefaults.
func buildModel(spec Spec) (*model, error) {
	rng := rand.New(rand.NewPCG(spec.Seed, 0x6632_6267_656e)) // "f2bgen"
	n := spec.Rows
	dups := int(math.Round(float64(n) * spec.DuplicateShare))
	uniqueRows := n - dups
	nIPs := max(1, int(math.Round(float64(n)*spec.IPsPerRow)))
	nPairs := max(nIPs, int(math.Round(float64(n)*spec.PairsPerRow)))
	nPairs = min(nPairs, uniqueRows, nIPs*len(spec.Jails))
	nIPs = min(nIPs, nPairs)

	m := &model{spec: spec}
	src := newIPSource(rng, spec.IPv6Share)
	m.ips = make([]netip.Addr, nIPs)
	m.ipText = make([]string, nIPs)
	for i := range m.ips {
		m.ips[i] = src.next()
		m.ipText[i] = m.ips[i].String()
	}

	jailCum := cumulative(len(spec.Jails), func(i int) float64 { return spec.Jails[i].Weight })
	pickJail := func() int { return pickCumulative(jailCum, rng.Float64()) }

	// Every IP is banned in at least one jail; the remaining pairs go to a
	// skewed set of IPs, so a few IPs hit every jail and most hit one.
	m.pairs = make([]pair, 0, nPairs)
	jailMask := make([]uint64, nIPs)
	for i := range nIPs {
		j := pickJail()
		jailMask[i] |= 1 << j
		m.pairs = append(m.pairs, pair{ip: int32(i), jail: int16(j)})
	}
	full := uint64(1)<<len(spec.Jails) - 1 // withDefaults allows at most 63 jails
	cursor := 0
	for len(m.pairs) < nPairs {
		ip, j := -1, -1
		for range 64 {
			u := rng.Float64()
			cand := int(u * u * float64(nIPs))
			cj := pickJail()
			if jailMask[cand]&(1<<cj) == 0 {
				ip, j = cand, cj
				break
			}
		}
		if ip < 0 { // the drawn IPs are saturated: take the next IP with a free jail
			for jailMask[cursor] == full {
				cursor = (cursor + 1) % nIPs
			}
			ip = cursor
			j = 0
			for jailMask[ip]&(1<<j) != 0 {
				j++
			}
		}
		jailMask[ip] |= 1 << j
		m.pairs = append(m.pairs, pair{ip: int32(ip), jail: int16(j)})
	}

	// Bans per pair: one each, the rest to repeat offenders with a
	// heavy-tailed (Pareto) propensity, limited by what fits in the history.
	historySec := int64(spec.History.Seconds())
	counts := make([]int32, len(m.pairs))
	caps := make([]int32, len(m.pairs))
	jailCap := make([]int32, len(spec.Jails))
	for j, jail := range spec.Jails {
		jailCap[j] = int32(maxBansInHistory(jail, historySec))
	}
	var capacity int64
	for p, pr := range m.pairs {
		counts[p] = 1
		caps[p] = jailCap[pr.jail]
		capacity += int64(caps[p])
	}
	if capacity < int64(uniqueRows) {
		return nil, fmt.Errorf("f2bgen: %d rows do not fit in %s of history for %d (ip, jail) pairs; lengthen History or raise PairsPerRow", n, spec.History, len(m.pairs))
	}
	propensity := cumulative(len(m.pairs), func(int) float64 {
		return math.Pow(1-rng.Float64(), -1/1.3) // Pareto, alpha 1.3
	})
	cursor = 0
	for range uniqueRows - len(m.pairs) {
		p := -1
		for range 32 {
			cand := pickCumulative(propensity, rng.Float64())
			if counts[cand] < caps[cand] {
				p = cand
				break
			}
		}
		if p < 0 {
			for counts[cursor] >= caps[cursor] {
				cursor = (cursor + 1) % len(m.pairs)
			}
			p = cursor
		}
		counts[p]++
	}

	// Ban times: the k bans of a pair follow each other, each after the
	// previous one expired, with random gaps filling the history.
	now := spec.Now.Unix()
	start := now - historySec
	m.events = make([]event, 0, n)
	gaps := make([]float64, 0, 64)
	for p, pr := range m.pairs {
		jail := spec.Jails[pr.jail]
		k := int(counts[p])
		var busy int64
		for i := 1; i < k; i++ {
			bt, _ := jail.banTimeSeconds(i)
			busy += bt
		}
		slack := float64(historySec - busy - 1)
		gaps = gaps[:0]
		var sum float64
		for range k + 1 {
			g := rng.ExpFloat64()
			gaps = append(gaps, g)
			sum += g
		}
		t := float64(start)
		for i := 1; i <= k; i++ {
			t += gaps[i-1] / sum * slack
			tob := int64(t)
			bt, bc := jail.banTimeSeconds(i)
			ev := event{timeofban: tob, bantime: bt, bancount: int32(bc), pair: int32(p)}
			if rng.Float64() < spec.ManualShare {
				ev.manual = true // `banip` stamps the ticket with the time of the command
			}
			ev.insertAt = tob + insertDelay(rng, now-tob)
			m.events = append(m.events, ev)
			if bt > 0 {
				t += float64(bt)
			}
		}
	}
	for range dups {
		orig := m.events[rng.IntN(uniqueRows)]
		orig.duplicate = true
		m.events = append(m.events, orig)
	}
	// A total order (identical events are interchangeable), so the row
	// order is a function of the spec alone.
	slices.SortFunc(m.events, func(a, b event) int {
		if a.insertAt != b.insertAt {
			return cmp.Compare(a.insertAt, b.insertAt)
		}
		return cmp.Or(cmp.Compare(a.pair, b.pair), cmp.Compare(a.timeofban, b.timeofban),
			cmpBool(a.duplicate, b.duplicate), cmpBool(a.manual, b.manual))
	})
	m.lastEvent = make([]int32, len(m.pairs))
	for i, ev := range m.events {
		m.lastEvent[ev.pair] = int32(i)
	}
	return m, nil
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	default:
		return 1
	}
}

// insertDelay is how long after timeofban fail2ban wrote the row: usually
// within a second, sometimes minutes (a busy server), rarely an hour (a log
// backlog read after a restart), never after now.
func insertDelay(rng *rand.Rand, untilNow int64) int64 {
	var d int64
	switch u := rng.Float64(); {
	case u < 0.97:
		d = int64(rng.IntN(2))
	case u < 0.998:
		d = int64(rng.IntN(120))
	default:
		d = int64(rng.IntN(3600))
	}
	return min(d, max(untilNow, 0))
}

// maxBansInHistory is how many consecutive bans of one IP fit in the history
// of a jail: one for a permanent jail, and with bantime.increment as many as
// the growing bantimes leave room for in 80 % of the history.
func maxBansInHistory(j Jail, historySec int64) int {
	if j.Permanent() {
		return 1
	}
	budget := historySec * 8 / 10
	var used int64
	n := 0
	for n < 1<<20 {
		bt, _ := j.banTimeSeconds(n + 1)
		if used+bt > budget && n > 0 {
			break
		}
		used += bt
		n++
	}
	return n
}

// cumulative returns running sums of weight(i) for i in [0, n).
func cumulative(n int, weight func(int) float64) []float64 {
	c := make([]float64, n)
	var sum float64
	for i := range c {
		sum += weight(i)
		c[i] = sum
	}
	return c
}

// pickCumulative maps u in [0, 1) to an index drawn proportionally to the
// weights behind the cumulative sums c.
func pickCumulative(c []float64, u float64) int {
	i, _ := slices.BinarySearch(c, u*c[len(c)-1])
	return min(i, len(c)-1)
}

func sortInt32(s []int32) { slices.Sort(s) }
