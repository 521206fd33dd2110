package f2bgen

import "time"

// Bans returns the rows Generate writes into bans for spec, in table (rowid)
// order, without touching SQLite: for ingest benchmarks and for naive
// recomputations in tests. Data is filled only when withData is set.
func Bans(spec Spec, withData bool) ([]Ban, error) {
	spec, err := spec.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := buildModel(spec)
	if err != nil {
		return nil, err
	}
	out := make([]Ban, len(m.events))
	for i := range m.events {
		ev := &m.events[i]
		pr := m.pairs[ev.pair]
		jail := &spec.Jails[pr.jail]
		b := Ban{Jail: jail.Name, IP: m.ipText[pr.ip], TimeOfBan: time.Unix(ev.timeofban, 0).UTC(), BanTime: ev.bantime, BanCount: int64(ev.bancount)}
		if withData {
			b.Data = appendBanData(nil, &spec, jail, b.IP, m.ips[pr.ip].Is6(), ev)
		}
		out[i] = b
	}
	return out, nil
}
