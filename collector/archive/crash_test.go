package archive

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bangui/bangui_exporter/internal/appdb"
)

const (
	crashEnvDB    = "BANGUI_ARCHIVE_CRASH_DB"
	crashEnvBase  = "BANGUI_ARCHIVE_CRASH_BASE"
	crashEnvStart = "BANGUI_ARCHIVE_CRASH_START"
	crashChunk    = 2000
)

// crashChild runs the ingesting child process of TestCrashMidIngest when
// the test binary is started with crashEnvDB set; it reports whether it did
// (it never returns when it did: it ingests until killed).
func crashChild() bool {
	path := os.Getenv(crashEnvDB)
	if path == "" {
		return false
	}
	base, err1 := strconv.ParseInt(os.Getenv(crashEnvBase), 10, 64)
	start, err2 := strconv.Atoi(os.Getenv(crashEnvStart))
	if err1 != nil || err2 != nil {
		fmt.Fprintln(os.Stderr, "crash child: bad environment")
		os.Exit(2)
	}
	ctx := context.Background()
	db, err := appdb.Open(ctx, path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	s, err := Open(ctx, db, Options{MaxQueue: 10 * crashChunk})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	for i := start; i < 50_000_000; i += crashChunk {
		// New events, plus rereads of older ones (as an engine restart would).
		s.Add(genEvents(base, i, i+crashChunk)...)
		s.Add(genEvents(base, i/2, i/2+crashChunk/4)...)
		if err := s.Flush(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(2)
		}
		// Reported only after the commit returned: everything below is durable.
		fmt.Fprintf(out, "committed %d\n", i+crashChunk)
		out.Flush() //nolint:errcheck,gosec // the parent notices a missing line
	}
	os.Exit(0)
	return true
}

// TestCrashMidIngest kills a process that ingests continuously with SIGKILL,
// several times: after each restart every event whose commit was reported is
// archived, the cycle in flight is all there or not at all, nothing is
// duplicated, and re-adding everything converges to exactly the full set.
func TestCrashMidIngest(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess test")
	}
	path := filepath.Join(t.TempDir(), "app.sqlite3")
	base := time.Now().Add(-24 * time.Hour).Unix()
	// A new seed each run explores more kill points; it is logged so a
	// failure can be replayed with BANGUI_CRASH_SEED.
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("BANGUI_CRASH_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("BANGUI_CRASH_SEED: %v", err)
		}
	}
	t.Logf("seed %d (replay: BANGUI_CRASH_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(1, seed))
	committed := 0
	for round := range 4 {
		start := max(0, committed-3*crashChunk) // overlap: rereads across restarts
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashEnvDB+"="+path, crashEnvBase+"="+strconv.FormatInt(base, 10),
			crashEnvStart+"="+strconv.Itoa(start))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		killAfter := 3 + rng.IntN(10)
		lines := 0
		for sc.Scan() {
			n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "committed "))
			if err != nil {
				t.Fatalf("child said %q", sc.Text())
			}
			committed = max(committed, n)
			lines++
			if lines == killAfter {
				// Somewhere in the next cycle (a cycle takes tens of milliseconds).
				time.Sleep(time.Duration(rng.IntN(15_000)) * time.Microsecond)
				if err := cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
			}
		}
		err = cmd.Wait()
		if lines < killAfter {
			t.Fatalf("round %d: child ended after %d cycles: %v\n%s", round, lines, err, stderr.String())
		}
		if err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("round %d: child did not die of SIGKILL: %v", round, err)
		}
		checkAfterCrash(t, path, base, committed)
	}
	// Re-adding everything ever generated converges to exactly the full set.
	total := committed + crashChunk
	db := openTestDB(t, path)
	s := openTestStore(t, db, Options{MaxQueue: total})
	all := genEvents(base, 0, total)
	s.Add(all...)
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := distinct(all)
	if diff := cmp.Diff(want, dump(t, db), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Fatalf("after re-adding everything (-want +got):\n%s", diff)
	}
	if s.Count() != int64(len(want)) {
		t.Fatalf("Count %d, want %d", s.Count(), len(want))
	}
	t.Logf("%d events committed across 4 kills", committed)
}

// checkAfterCrash opens the archive after a kill: committed events are all
// there, the cycle in flight is atomic, nothing else and no duplicate.
func checkAfterCrash(t *testing.T, path string, base int64, committed int) {
	t.Helper()
	db := openTestDB(t, path)
	defer closeQuietly(db)
	var check string
	if err := db.Reader.QueryRowContext(context.Background(), "PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check: %q %v", check, err)
	}
	s := openTestStore(t, db, Options{})
	got := dump(t, db)
	index := map[eventKey]int{}
	for i := range committed + crashChunk {
		index[keyOfEvent(genEvent(base, i))] = i
	}
	seen := map[eventKey]bool{}
	inFlight := 0
	for _, e := range got {
		k := keyOfEvent(e)
		if seen[k] {
			t.Fatalf("duplicate event %+v", e)
		}
		seen[k] = true
		i, ok := index[k]
		if !ok {
			t.Fatalf("event %+v was never generated (or beyond the cycle in flight)", e)
		}
		if i >= committed {
			inFlight++
		}
	}
	for i := range committed {
		if !seen[keyOfEvent(genEvent(base, i))] {
			t.Fatalf("committed event %d is missing", i)
		}
	}
	if inFlight != 0 && inFlight != crashChunk {
		t.Fatalf("the cycle in flight is partly there: %d of %d events", inFlight, crashChunk)
	}
	if s.Count() != int64(len(got)) {
		t.Fatalf("Count %d, rows %d", s.Count(), len(got))
	}
	t.Logf("after kill: %d committed, cycle in flight %s", committed, map[bool]string{true: "committed", false: "lost"}[inFlight > 0])
}
