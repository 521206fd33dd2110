package sessionauth

import (
	"net/http"
)

// RequireSession serves h, a read-only endpoint of another part mounted
// under /api/ (e.g. banmap's /api/bans), to GET and HEAD requests with a
// valid admin session, exactly as the admin API's own endpoints: the same
// headers, the same 401 for a missing or bad session, the same answer
// before setup. Sessions are validated from memory within
// --admin.session-cache-ttl, so such a request reads no database then.
func (s *Service) RequireSession(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Cache-Control", "no-store")
		hd.Set("X-Content-Type-Options", "nosniff")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			hd.Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed")
			return
		}
		if _, _, ok := s.authenticate(w, r); !ok {
			return
		}
		h.ServeHTTP(w, r)
	})
}
