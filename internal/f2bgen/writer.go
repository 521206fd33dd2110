package f2bgen

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"
)

// Ban is one ban event as fail2ban writes it.
type Ban struct {
	Jail      string
	IP        string
	TimeOfBan time.Time
	// BanTime in seconds; -1 is permanent.
	BanTime  int64
	BanCount int64
	// Data is the JSON stored in the data column (as a BLOB).
	Data []byte
}

// WriterOptions configure a Writer.
type WriterOptions struct {
	// Seed makes the bans AddBans invents reproducible.
	Seed uint64
	// Jails the database's bans belong to; defaults to DefaultJails(). A
	// ban in a jail not listed gets a 10-minute bantime.
	Jails []Jail
	// RepeatShare is the fraction of AddBans bans that go to an IP already
	// in bips (repeat offenders, whose bantime grows in increment jails);
	// default 0.3.
	RepeatShare float64
	// IPv6Share of new IPs (default 0.05).
	IPv6Share float64
}

// Writer changes a fail2ban database the way fail2ban-server does, through
// a connection configured like fail2ban's own (foreign_keys on,
// synchronous off, journal in memory, 5 s busy timeout). It is not safe for
// concurrent use.
type Writer struct {
	db      *sql.DB
	schema  int
	opts    WriterOptions
	jails   map[string]Jail
	weights []float64
	rng     *rand.Rand
	ips     *ipSource
}

// OpenWriter opens the existing fail2ban database at path for writing.
func OpenWriter(ctx context.Context, path string, opts WriterOptions) (*Writer, error) {
	if len(opts.Jails) == 0 {
		opts.Jails = DefaultJails()
	}
	if opts.RepeatShare == 0 {
		opts.RepeatShare = 0.3
	}
	if opts.IPv6Share == 0 {
		opts.IPv6Share = defaultIPv6Share
	}
	// mode=rw: never create a file that is not there.
	dsn := "file:" + path + "?mode=rw&_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)" +
		"&_pragma=synchronous(0)&_pragma=journal_mode(MEMORY)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("f2bgen: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	w := &Writer{db: db, opts: opts, jails: map[string]Jail{}}
	if err := db.QueryRowContext(ctx, "SELECT version FROM fail2banDb LIMIT 1").Scan(&w.schema); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("f2bgen: read schema version of %s: %w", path, err)
	}
	if w.schema != 4 && w.schema != 2 {
		_ = db.Close()
		return nil, fmt.Errorf("f2bgen: %s has fail2ban schema version %d; only 2 and 4 are supported", path, w.schema)
	}
	for _, j := range opts.Jails {
		w.jails[j.Name] = j
		w.weights = append(w.weights, j.Weight)
	}
	w.weights = cumulative(len(w.weights), func(i int) float64 { return w.weights[i] })
	w.rng = rand.New(rand.NewPCG(opts.Seed, 0x7772_6974_6572)) // "writer"
	w.ips = newIPSource(w.rng, opts.IPv6Share)
	return w, nil
}

// Schema returns the database's fail2ban schema version.
func (w *Writer) Schema() int { return w.schema }

// Close closes the database.
func (w *Writer) Close() error {
	if err := w.db.Close(); err != nil {
		return fmt.Errorf("f2bgen: close: %w", err)
	}
	return nil
}

// AddBan writes one ban in one transaction, as fail2ban's Fail2BanDb.addBan
// does: INSERT INTO bans, then INSERT OR REPLACE INTO bips (schema 4).
func (w *Writer) AddBan(ctx context.Context, b Ban) error {
	tx, err := w.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("f2bgen: add ban: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	tob := b.TimeOfBan.Unix()
	if w.schema == 2 {
		_, err = tx.ExecContext(ctx, "INSERT INTO bans(jail, ip, timeofban, data) VALUES(?, ?, ?, ?)", b.Jail, b.IP, tob, b.Data)
	} else {
		_, err = tx.ExecContext(ctx, "INSERT INTO bans(jail, ip, timeofban, bantime, bancount, data) VALUES(?, ?, ?, ?, ?, ?)",
			b.Jail, b.IP, tob, b.BanTime, b.BanCount, b.Data)
		if err == nil {
			_, err = tx.ExecContext(ctx, "INSERT OR REPLACE INTO bips(ip, jail, timeofban, bantime, bancount, data) VALUES(?, ?, ?, ?, ?, ?)",
				b.IP, b.Jail, tob, b.BanTime, b.BanCount, b.Data)
		}
	}
	if err != nil {
		return fmt.Errorf("f2bgen: add ban of %s in %s: %w", b.IP, b.Jail, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("f2bgen: add ban of %s in %s: commit: %w", b.IP, b.Jail, err)
	}
	return nil
}

// AddBans invents n realistic bans at time at and writes each in its own
// transaction, as fail2ban does. A share of them (RepeatShare) re-ban an IP
// from bips whose ban has expired, with the next bancount and, in
// bantime.increment jails, the doubled bantime; the rest ban new public IPs
// in jails drawn by weight. It returns the bans written.
func (w *Writer) AddBans(ctx context.Context, n int, at time.Time) ([]Ban, error) {
	bans := make([]Ban, 0, n)
	for range n {
		b, err := w.NextBan(ctx, at)
		if err != nil {
			return bans, err
		}
		if err := w.AddBan(ctx, b); err != nil {
			return bans, err
		}
		bans = append(bans, b)
	}
	return bans, nil
}

// NextBan invents the next ban at time at, as AddBans does, without writing
// it (it reads bips to find repeat offenders); pass it to AddBan.
func (w *Writer) NextBan(ctx context.Context, at time.Time) (Ban, error) {
	at = at.Truncate(time.Second)
	if w.rng.Float64() < w.opts.RepeatShare {
		b, ok, err := w.repeatBan(ctx, at)
		if err != nil || ok {
			return b, err
		}
	}
	jail := w.opts.Jails[pickCumulative(w.weights, w.rng.Float64())]
	addr := w.ips.next()
	return w.makeBan(jail, addr, at, 1), nil
}

// repeatBan picks a random bips row (a random rowid probe, so it costs one
// index lookup) and re-bans its IP if its ban has expired.
func (w *Writer) repeatBan(ctx context.Context, at time.Time) (Ban, bool, error) {
	table := "bips"
	if w.schema == 2 {
		table = "bans"
	}
	var maxRowid sql.NullInt64
	if err := w.db.QueryRowContext(ctx, "SELECT max(rowid) FROM "+table).Scan(&maxRowid); err != nil {
		return Ban{}, false, fmt.Errorf("f2bgen: pick a repeat offender: %w", err)
	}
	if !maxRowid.Valid {
		return Ban{}, false, nil
	}
	probe := 1 + w.rng.Int64N(maxRowid.Int64)
	var (
		ip, jailName                 string
		timeofban, bantime, bancount int64
		err                          error
	)
	if w.schema == 2 {
		err = w.db.QueryRowContext(ctx, "SELECT ip, jail, timeofban FROM bans WHERE rowid >= ? AND ip IS NOT NULL ORDER BY rowid LIMIT 1", probe).
			Scan(&ip, &jailName, &timeofban)
		bantime, bancount = 600, 1
	} else {
		err = w.db.QueryRowContext(ctx, "SELECT ip, jail, timeofban, bantime, bancount FROM bips WHERE rowid >= ? ORDER BY rowid LIMIT 1", probe).
			Scan(&ip, &jailName, &timeofban, &bantime, &bancount)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return Ban{}, false, nil
	}
	if err != nil {
		return Ban{}, false, fmt.Errorf("f2bgen: pick a repeat offender: %w", err)
	}
	addr, perr := netip.ParseAddr(ip)
	if perr != nil {
		return Ban{}, false, nil // not an IP (fail2ban can ban hostnames); skip it
	}
	w.ips.markUsed(addr)
	// fail2ban bans an IP again in a jail only after the last ban ended.
	if bantime <= -1 || timeofban+bantime > at.Unix() {
		return Ban{}, false, nil
	}
	jail, ok := w.jails[jailName]
	if !ok {
		jail = Jail{Name: jailName, BanTime: 10 * time.Minute, MaxRetry: defaultMaxRetry, Filter: FilterSSHD}
	}
	return w.makeBan(jail, addr, at, int(bancount)+1), true, nil
}

// makeBan builds the n-th ban of addr in jail at time at.
func (w *Writer) makeBan(jail Jail, addr netip.Addr, at time.Time, n int) Ban {
	if jail.MaxRetry <= 0 {
		jail.MaxRetry = defaultMaxRetry
	}
	bt, bc := jail.banTimeSeconds(n)
	ipText := addr.String()
	ev := event{timeofban: at.Unix(), bantime: bt, bancount: int32(bc), pair: w.rng.Int32()}
	spec := Spec{Seed: w.opts.Seed, MatchesPerBan: 1}
	data := appendBanData(nil, &spec, &jail, ipText, addr.Is6(), &ev)
	return Ban{Jail: jail.Name, IP: ipText, TimeOfBan: at, BanTime: bt, BanCount: bc, Data: data}
}

// Unban removes IPs from a jail as `fail2ban-client set JAIL unbanip IP…`
// does (Fail2BanDb.delBan): DELETE from bips, then from bans, in one
// transaction; with no IP every row of the jail goes. It returns the number
// of bans rows deleted.
func (w *Writer) Unban(ctx context.Context, jail string, ips ...string) (int64, error) {
	tx, err := w.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("f2bgen: unban: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	var deleted int64
	del := func(ip *string) error {
		var args []any
		cond := "jail = ?"
		args = append(args, jail)
		if ip != nil {
			cond += " AND ip = ?"
			args = append(args, *ip)
		}
		if w.schema == 4 {
			if _, err := tx.ExecContext(ctx, "DELETE FROM bips WHERE "+cond, args...); err != nil {
				return err
			}
		}
		res, err := tx.ExecContext(ctx, "DELETE FROM bans WHERE "+cond, args...)
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		deleted += n
		return nil
	}
	if len(ips) == 0 {
		err = del(nil)
	}
	for i := range ips {
		if err = del(&ips[i]); err != nil {
			break
		}
	}
	if err != nil {
		return 0, fmt.Errorf("f2bgen: unban in %s: %w", jail, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("f2bgen: unban in %s: commit: %w", jail, err)
	}
	return deleted, nil
}

// PurgeResult counts what a purge deleted.
type PurgeResult struct {
	Bans, Bips, Jails int64
}

// Purge runs fail2ban's purge (Fail2BanDb.purge) as of now with purge age
// age (dbpurgeage, 1 day by default) in one transaction:
//
//	DELETE FROM bans WHERE timeofban < now - age
//	DELETE FROM bips WHERE timeofban < now - age AND bantime != -1 AND timeofban + bantime*3 < now - age
//	DELETE FROM jails WHERE enabled = 0 AND no bans or bips rows refer to it
func (w *Writer) Purge(ctx context.Context, now time.Time, age time.Duration) (PurgeResult, error) {
	var res PurgeResult
	tx, err := w.db.BeginTx(ctx, nil)
	if err != nil {
		return res, fmt.Errorf("f2bgen: purge: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	ageSec := int64(age / time.Second)
	// fail2ban compares bans with a float (time.time() - age) and bips with
	// int(time.time()) - age.
	nowFloat := float64(now.UnixNano()) / 1e9
	exec := func(n *int64, q string, args ...any) {
		if err != nil {
			return
		}
		var r sql.Result
		if r, err = tx.ExecContext(ctx, q, args...); err == nil {
			*n, _ = r.RowsAffected()
		}
	}
	exec(&res.Bans, "DELETE FROM bans WHERE timeofban < ?", nowFloat-float64(ageSec))
	if w.schema == 4 {
		cut := now.Unix() - ageSec
		exec(&res.Bips, "DELETE FROM bips WHERE timeofban < ? and bantime != -1 and (timeofban + (bantime * ?)) < ?", cut, 3, cut)
		exec(&res.Jails, "DELETE FROM jails WHERE enabled = 0 "+
			"AND NOT EXISTS(SELECT * FROM bans WHERE jail = jails.name) "+
			"AND NOT EXISTS(SELECT * FROM bips WHERE jail = jails.name)")
	} else {
		exec(&res.Jails, "DELETE FROM jails WHERE enabled = 0 AND NOT EXISTS(SELECT * FROM bans WHERE jail = jails.name)")
	}
	if err != nil {
		return res, fmt.Errorf("f2bgen: purge: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return res, fmt.Errorf("f2bgen: purge: commit: %w", err)
	}
	return res, nil
}

// SetJailEnabled sets jails.enabled as fail2ban does when a jail starts
// (adding the jail if it is new) or stops.
func (w *Writer) SetJailEnabled(ctx context.Context, name string, enabled bool) error {
	var err error
	if enabled {
		_, err = w.db.ExecContext(ctx, "INSERT INTO jails(name, enabled) VALUES(?, 1) ON CONFLICT(name) DO UPDATE SET enabled = 1 WHERE enabled != 1", name)
	} else {
		_, err = w.db.ExecContext(ctx, "UPDATE jails SET enabled=0 WHERE name=?", name)
	}
	if err != nil {
		return fmt.Errorf("f2bgen: set jail %s enabled=%v: %w", name, enabled, err)
	}
	return nil
}

// AdvanceLogPositions moves every log's lastfilepos forward by delta bytes,
// as fail2ban does about every 10 s while reading logs: the file changes
// though no ban was added.
func (w *Writer) AdvanceLogPositions(ctx context.Context, delta int64) error {
	if _, err := w.db.ExecContext(ctx, "UPDATE logs SET lastfilepos = lastfilepos + ?", delta); err != nil {
		return fmt.Errorf("f2bgen: advance log positions: %w", err)
	}
	return nil
}
