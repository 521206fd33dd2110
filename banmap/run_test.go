package banmap

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bangui/bangui_exporter/collector"
	"github.com/bangui/bangui_exporter/internal/testkit"
)

// TestRunConcurrent runs the background loop while the bans change and
// scrapes and API requests read the snapshot at the same time (run with
// -race): it waits for Ready, follows the source within its interval, and
// stops with its context.
func TestRunConcurrent(t *testing.T) {
	src := &fakeSource{}
	var ready atomic.Bool
	m, err := New(Options{Source: src, AS: []ASLookup{tableAS{"192.0.2.1": google}}, Places: tablePlaces{}, List: true,
		Interval: 10 * time.Millisecond, Ready: ready.Load})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()

	// Not ready: no walk, no snapshot for the API.
	if code := getJSON(t, m.ServeBans, "/api/bans", nil); code != http.StatusServiceUnavailable {
		t.Errorf("before ready: %d", code)
	}
	src.set([]collector.BannedIP{ban("sshd", "192.0.2.1", "DE", 1, 600, 1)})
	ready.Store(true)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = testutil.CollectAndCount(m)
				var page BansPage
				_ = getJSON(t, m.ServeBans, "/api/bans?limit=5", &page)
			}
		})
	}
	bans := []collector.BannedIP{ban("sshd", "192.0.2.1", "DE", 1, 600, 1)}
	for i := range 20 {
		bans = append(bans, ban("nginx", "198.51.100."+string(rune('0'+i%10)), "US", int64(10+i), 600, 1))
		src.set(bans)
		time.Sleep(time.Millisecond)
	}
	testkit.Eventually(t, 10*time.Second, func() error { // waiting for the loop to see the last bans
		var page BansPage
		if code := getJSON(t, m.ServeBans, "/api/bans?limit=1000", &page); code != http.StatusOK || page.Total != len(bans) {
			return fmt.Errorf("total %d, want %d", page.Total, len(bans))
		}
		return nil
	})
	close(stop)
	wg.Wait()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop with its context")
	}
}
