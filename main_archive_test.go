package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangui/bangui_exporter/internal/f2bgen"
	"github.com/bangui/bangui_exporter/internal/testkit"
)

// TestArchiveBinary runs the built exporter with the default flags (archive
// on): after a kill -9 before its first ingest cycle, the next start
// archives every ban event of fail2ban's database into the app database, once;
// it flushes on SIGTERM, and after fail2ban purged everything a
// restarted exporter still counts the whole history in its windows.
// --no-storage.archive turns it off; a retention shorter than the longest
// window is refused.
func TestArchiveBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the exporter")
	}
	bin := buildStampedExporter(t, "0.0.0-archive", "archive")
	dir := t.TempDir()
	f2bDB := filepath.Join(dir, "fail2ban.sqlite3")
	appDB := filepath.Join(dir, "state", "bangui.sqlite3")
	now := time.Now().Truncate(time.Second)
	st, err := f2bgen.Generate(context.Background(), f2bDB, f2bgen.DefaultSpec(3000, now))
	if err != nil {
		t.Fatal(err)
	}
	f2b, err := sql.Open("sqlite", f2bDB)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f2b.Close() }()
	var events float64
	if err := f2b.QueryRow("SELECT count(*) FROM (SELECT DISTINCT jail, ip, timeofban FROM bans)").Scan(&events); err != nil {
		t.Fatal(err)
	}
	args := []string{"--fail2ban.db", f2bDB, "--fail2ban.socket=", "--storage.path", appDB, "--geo.providers=none"}

	// kill -9 right after the startup read, before the first ingest cycle
	// (10 s): nothing was archived, and the next start offers every event
	// still in fail2ban's database again.
	p := startExporter(t, bin, args...)
	p.waitLog("the startup read", func(logs string) bool { return strings.Contains(logs, "read fail2ban's database") })
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.exited

	p = startExporter(t, bin, args...)
	// The startup read's events are written within an ingest cycle (10 s).
	testkit.Eventually(t, 30*time.Second, func() error {
		fams := scrapeFamilies(t, p.base)
		if n, _ := sumOf(fams, "bangui_exporter_archive_events"); n != events {
			return fmt.Errorf("bangui_exporter_archive_events = %v, want %v (distinct events in bans):\n%s", n, events, p.logs)
		}
		if oldest, _ := sumOf(fams, "fail2ban_oldest_ban_timestamp_seconds"); oldest != float64(st.OldestBan.Unix()) {
			t.Errorf("fail2ban_oldest_ban_timestamp_seconds = %v, want %d", oldest, st.OldestBan.Unix())
		}
		return nil
	})
	p.stop()
	if !strings.Contains(p.logs.String(), "ban archive on") {
		t.Errorf("no log line about the archive:\n%s", p.logs)
	}
	app, err := sql.Open("sqlite", "file:"+appDB+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = app.Close() }()
	var rows float64
	if err := app.QueryRow("SELECT count(*) FROM archive_events").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != events {
		t.Fatalf("%v rows in archive_events, want %v", rows, events)
	}

	// fail2ban purges everything; the restarted exporter still counts the
	// whole history (30 days, inside the default 365d window).
	if _, err := f2b.Exec("DELETE FROM bans"); err != nil {
		t.Fatal(err)
	}
	p = startExporter(t, bin, args...)
	recentSum := func() float64 {
		fams := scrapeFamilies(t, p.base)
		v, ok := fams["fail2ban_recent_bans"]
		if !ok {
			return 0
		}
		var s float64
		for _, smp := range *v {
			if smp.Metric["window"] == "365d" {
				s += float64(smp.Value)
			}
		}
		return s
	}
	p.waitLog("the startup read", func(logs string) bool { return strings.Contains(logs, "read fail2ban's database") })
	if got := recentSum(); got != events {
		t.Fatalf("after the purge and a restart, sum(fail2ban_recent_bans{window=365d}) = %v, want %v:\n%s", got, events, p.logs)
	}
	p.stop()

	// Off: no archive metrics, and the purged history is gone from the windows.
	p = startExporter(t, bin, append(args, "--no-storage.archive")...)
	p.waitLog("the startup read", func(logs string) bool { return strings.Contains(logs, "read fail2ban's database") })
	fams := scrapeFamilies(t, p.base)
	if _, ok := fams["bangui_exporter_archive_events"]; ok {
		t.Error("bangui_exporter_archive_events exposed with --no-storage.archive")
	}
	if got := recentSum(); got != 0 {
		t.Errorf("without the archive, sum(fail2ban_recent_bans{window=365d}) = %v after the purge, want 0", got)
	}
	p.stop()

	// A retention shorter than the longest window (365d by default).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append(args, "--web.listen-address=127.0.0.1:0", "--storage.retention=30d")...).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "shorter than the longest --bans.window") {
		t.Fatalf("--storage.retention=30d: %v\n%s", err, out)
	}
}
