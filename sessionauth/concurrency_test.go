package sessionauth

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestConcurrentLoginsAndRequests(t *testing.T) {
	f := newFixture(t, true)
	const clients = 16
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Go(func() {
			remote := fmt.Sprintf("198.51.100.%d:1000", i+1)
			rec := f.doPolite(req{method: "POST", path: PathLogin, body: `{"password":"` + testPassword + `"}`, remote: remote})
			if rec.Code != 200 {
				errs <- fmt.Errorf("client %d: login %d %s", i, rec.Code, rec.Body)
				return
			}
			var s sessionResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &s); err != nil {
				errs <- err
				return
			}
			for j := range 20 {
				r := []req{
					{method: "GET", path: PathSession, bearer: s.Token},
					{method: "GET", path: PathGeoStatus, cookie: s.Token},
					{method: "POST", path: PathReResolve, bearer: s.Token},
					{method: "GET", path: PathLookupBase + fmt.Sprintf("203.0.113.%d", j), bearer: s.Token},
				}[j%4]
				if j%7 == 0 {
					f.svc.ClearSessionCache()
				}
				if rec := f.do(r); rec.Code >= 300 {
					errs <- fmt.Errorf("client %d: %s %s: %d %s", i, r.method, r.path, rec.Code, rec.Body)
					return
				}
			}
			if rec := f.do(req{method: "POST", path: PathLogout, bearer: s.Token}); rec.Code != 200 {
				errs <- fmt.Errorf("client %d: logout %d", i, rec.Code)
				return
			}
			if rec := f.do(req{method: "GET", path: PathSession, bearer: s.Token}); rec.Code != 401 {
				errs <- fmt.Errorf("client %d: session after logout %d", i, rec.Code)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Parallel guesses from one address: one is checked, the others wait.
func TestConcurrentWrongLoginsOneAddress(t *testing.T) {
	f := newFixture(t, true)
	const n = 12
	var wg sync.WaitGroup
	var codes sync.Map
	for i := range n {
		wg.Go(func() {
			rec := f.do(req{method: "POST", path: PathLogin, body: fmt.Sprintf(`{"password":"guess number %02d"}`, i), remote: "203.0.113.9:1"})
			v, _ := codes.LoadOrStore(rec.Code, new(atomic.Int32))
			v.(*atomic.Int32).Add(1)
		})
	}
	wg.Wait()
	count := func(code int) int32 {
		v, ok := codes.Load(code)
		if !ok {
			return 0
		}
		return v.(*atomic.Int32).Load()
	}
	if count(401) != 1 || count(429) != n-1 {
		t.Fatalf("401: %d, 429: %d; want 1 and %d", count(401), count(429), n-1)
	}
}

// Logout is linearizable against concurrent validations: no request that
// starts after Logout returned is accepted, even with validations racing
// between the cache and the database.
func TestLogoutRacesValidation(t *testing.T) {
	f := newFixture(t, true)
	for round := range 20 {
		tok := f.login(fmt.Sprintf("192.0.2.%d:1", round+1))
		var loggedOut atomic.Bool
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var bad atomic.Int32
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					after := loggedOut.Load()
					rec := f.do(req{method: "GET", path: PathSession, bearer: tok})
					if after && rec.Code != http.StatusUnauthorized {
						bad.Add(1)
					}
				}
			})
		}
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					f.svc.ClearSessionCache()
				}
			}
		})
		if rec := f.do(req{method: "POST", path: PathLogout, bearer: tok}); rec.Code != 200 {
			t.Fatalf("logout %d", rec.Code)
		}
		loggedOut.Store(true)
		for range 20 {
			if rec := f.do(req{method: "GET", path: PathSession, bearer: tok}); rec.Code != 401 {
				t.Fatalf("round %d: accepted after logout", round)
			}
		}
		close(stop)
		wg.Wait()
		if n := bad.Load(); n != 0 {
			t.Fatalf("round %d: %d requests accepted after logout", round, n)
		}
	}
}

func TestConcurrentSetupOnlyOneWins(t *testing.T) {
	f := newFixture(t, false)
	token := loggedSetupToken(t, f.logs.String())
	const n = 8
	var wg sync.WaitGroup
	var created, conflict atomic.Int32
	for i := range n {
		wg.Go(func() {
			body := fmt.Sprintf(`{"setup_token":%q,"password":"password number %d!"}`, token, i)
			switch rec := f.doPolite(req{method: "POST", path: PathSetup, body: body, remote: fmt.Sprintf("192.0.2.%d:1", i+1)}); rec.Code {
			case 201:
				created.Add(1)
			case 409:
				conflict.Add(1)
			default:
				t.Errorf("setup %d: %d %s", i, rec.Code, rec.Body)
			}
		})
	}
	wg.Wait()
	if created.Load() != 1 || conflict.Load() != n-1 {
		t.Fatalf("created %d, conflict %d", created.Load(), conflict.Load())
	}
	// Exactly one of the passwords works.
	ok := 0
	for i := range n {
		rec := f.do(req{method: "POST", path: PathLogin, body: fmt.Sprintf(`{"password":"password number %d!"}`, i), remote: fmt.Sprintf("198.51.100.%d:1", i+1)})
		if rec.Code == 200 {
			ok++
		}
	}
	if ok != 1 {
		t.Fatalf("%d passwords work", ok)
	}
	if strings.Count(f.logs.String(), "admin password set through the setup endpoint") != 1 {
		t.Fatal("want one setup log line")
	}
}
