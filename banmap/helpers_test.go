package banmap

import (
	"context"
	"net/netip"
	"slices"
	"sync"

	"github.com/bangui/bangui_exporter/collector"
	"github.com/bangui/bangui_exporter/geo"
)

// fakeSource is a Source over a fixed list of banned pairs, walked in
// chunks of chunk (default 3) like the engine's walk.
type fakeSource struct {
	mu    sync.Mutex
	bans  []collector.BannedIP
	chunk int
	err   error
}

func (f *fakeSource) set(bans []collector.BannedIP) {
	f.mu.Lock()
	f.bans = slices.Clone(bans)
	f.mu.Unlock()
}

func (f *fakeSource) WalkBanned(ctx context.Context, fn func([]collector.BannedIP)) error {
	f.mu.Lock()
	bans, err := slices.Clone(f.bans), f.err
	f.mu.Unlock()
	if err != nil {
		return err
	}
	n := f.chunk
	if n == 0 {
		n = 3
	}
	for c := range slices.Chunk(bans, n) {
		if err := ctx.Err(); err != nil {
			return err
		}
		fn(c)
	}
	return nil
}

// ban is a BannedIP from text.
func ban(jail, ip, country string, tob, bantime, bancount int64) collector.BannedIP {
	return collector.BannedIP{Jail: jail, IP: netip.MustParseAddr(ip).As16(), Country: country, TimeOfBan: tob, Bantime: bantime, Bancount: bancount}
}

// tableAS answers from a map of IP → AS.
type tableAS map[string]geo.AS

func (t tableAS) AS(ip netip.Addr) (geo.AS, bool) {
	a, ok := t[ip.String()]
	return a, ok
}

// tablePlaces answers from a map of IP → place.
type tablePlaces map[string]geo.Place

func (tablePlaces) HasPlaces() bool { return true }

func (t tablePlaces) Place(ip netip.Addr) (geo.Place, bool) {
	p, ok := t[ip.String()]
	return p, ok
}
