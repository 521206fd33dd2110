package collector

// Countries off the scrape path: when geo learns countries (its generation
// changes), every IP the engine holds is looked up again, and those whose
// country changed move their counts. A scrape would do that itself
// (refreshCountries) — hundreds of thousands of lookups at a million rows.
// While RunCountryRefresh runs, it does it in the background instead (for
// more than inlineCountryIPs IPs): it copies the IPs
// under the Exporter's lock, looks them up without it, and moves the
// changed ones under the lock again.

import (
	"context"
	"time"
)

// countryRefreshEvery is how often RunCountryRefresh looks at geo's
// generation: countries learned after a scrape are in place well before
// the next one, and a burst of answers costs at most one pass a second.
const countryRefreshEvery = time.Second

// inlineCountryIPs is the most IPs for which a scrape moves countries
// itself even while RunCountryRefresh runs: looking a few thousand IPs up
// costs a scrape well under a millisecond, and a small host's scrape then
// shows every country geo knows (no second of ZZ after geo answered).
const inlineCountryIPs = 4096

// RunCountryRefresh moves the IPs whose country changed in the background
// until ctx ends: every countryRefreshEvery, and at once when a scrape
// found geo's generation moved. While it runs, scrapes leave the countries
// to it; after it returns, they move them themselves again.
func (ex *Exporter) RunCountryRefresh(ctx context.Context) {
	ex.countriesAside.Store(true)
	defer ex.countriesAside.Store(false)
	t := time.NewTicker(countryRefreshEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-ex.kickCountries:
		}
		ex.refreshCountriesAside(ctx)
	}
}

// probedIP is an IP as the engine held it when its country was looked up,
// and the code the lookup found (zero: none). 24 bytes: at a million rows a
// pass probes 235,000 IPs, at the first start's peak of memory.
type probedIP struct {
	key     ipKey
	idx     uint32
	country uint16
	code    [2]byte
}

// countryProbeChunk is how many IPs a background pass copies, looks up and
// moves at a time: the copy is 24 bytes per IP, so a pass holds at most
// ≈ 3 MB of it however many IPs the engine holds (all 2.35M at once were
// 56 MB of the first start's peak at ten million rows), and a scrape waits
// for the lock at most one chunk's moves.
const countryProbeChunk = 1 << 17

// refreshCountriesAside is one background pass; it does nothing unless
// geo's generation moved since the engine last looked, and stops early
// when ctx ends (a shutdown does not wait for a whole pass).
func (ex *Exporter) refreshCountriesAside(ctx context.Context) {
	gen := ex.countries.Generation()
	ex.mu.Lock()
	eng := ex.eng
	if eng == nil || !ex.loaded || gen == eng.countryGen {
		ex.mu.Unlock()
		return
	}
	startGen := eng.countryGen
	reassigned, all := eng.countryScope()
	ex.mu.Unlock()

	var probe []probedIP
	for lo := 0; ; lo += ex.countryChunk {
		// Copy a chunk of the IPs under the lock.
		ex.mu.Lock()
		if ex.eng != eng {
			ex.mu.Unlock()
			return // reloaded meanwhile: the new engine looked up its IPs itself
		}
		hi := min(lo+ex.countryChunk, len(eng.ips))
		probe = probe[:0]
		for i := lo; i < hi; i++ {
			if info := &eng.ips[i]; eng.ipRefs[i] > 0 && (all || info.country == 0) {
				probe = append(probe, probedIP{key: info.key, idx: uint32(i), country: info.country})
			}
		}
		ex.mu.Unlock()
		if lo >= hi {
			break
		}

		// The lookups, without the lock: a scrape meanwhile does not wait.
		for i := range probe {
			if i%4096 == 0 && ctx.Err() != nil {
				return
			}
			if c := normalizeCountry(ex.countries.Country(probe[i].key.addr())); c != "" {
				probe[i].code = [2]byte{c[0], c[1]}
			}
		}

		if !ex.moveProbed(eng, probe) {
			return
		}
	}

	ex.mu.Lock()
	defer ex.mu.Unlock()
	if ex.eng == eng && eng.countryGen == startGen {
		// Every IP held now has a country at least as recent as gen: the
		// probed ones were looked up after gen was read, the others were
		// interned (and looked up) since, or (not all) had a country that
		// no reassignment changed.
		eng.countryGen, eng.reassignGen = gen, reassigned
	}
}

// moveProbed moves, under the lock, the probed IPs whose country changed;
// false when the engine was replaced meanwhile.
func (ex *Exporter) moveProbed(eng *engine, probe []probedIP) bool {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if ex.eng != eng {
		return false // reloaded meanwhile: the new engine looked up its IPs itself
	}
	var moves []countryMove
	for _, p := range probe {
		info := &eng.ips[p.idx]
		// An IP released, replaced by another in its slot, or moved by a
		// scrape meanwhile is left to the next pass.
		if eng.ipRefs[p.idx] == 0 || info.key != p.key || info.country != p.country {
			continue
		}
		if c := eng.countryOf(p.code); c != info.country {
			moves = append(moves, countryMove{ip: p.idx, to: c})
		}
	}
	eng.moveCountries(moves)
	return true
}
