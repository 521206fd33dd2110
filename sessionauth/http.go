package sessionauth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/bangui/bangui_exporter/geo"
)

// geoEntry lets lookupResponse embed geo.Entry so its fields appear inline.
type geoEntry = geo.Entry

// Routes of the admin API.
const (
	PathSetup      = "/api/setup"
	PathLogin      = "/api/auth/login"
	PathLogout     = "/api/auth/logout"
	PathSession    = "/api/auth/session"
	PathReResolve  = "/api/geo/re-resolve"
	PathGeoStatus  = "/api/geo/status"
	PathLookupBase = "/api/geo/lookup/"
)

// Error messages a client sees. Every authentication failure gets the same
// one.
const (
	msgAuthFailed     = "authentication failed"
	msgSetupRequired  = "setup required"
	msgAlreadySetUp   = "setup already complete"
	msgGeoDisabled    = "geo resolution is disabled in this exporter"
	msgInternal       = "internal error"
	msgNotFound       = "not found"
	msgTooMany        = "too many attempts; retry later"
	msgBusy           = "too many logins in progress; retry later"
	msgBadContentType = "Content-Type must be application/json"
	msgBadOrigin      = "cross-origin request refused"
	msgBodyTooLarge   = "request body larger than 64 KiB"
)

// route is one endpoint.
type route struct {
	method string
	path   string // exact, or a prefix when prefix is set
	prefix bool
	handle func(*Service, http.ResponseWriter, *http.Request)
}

var routes = []route{
	{http.MethodPost, PathSetup, false, (*Service).handleSetup},
	{http.MethodPost, PathLogin, false, (*Service).handleLogin},
	{http.MethodPost, PathLogout, false, (*Service).handleLogout},
	{http.MethodGet, PathSession, false, (*Service).handleSession},
	{http.MethodPost, PathReResolve, false, (*Service).handleReResolve},
	{http.MethodGet, PathGeoStatus, false, (*Service).handleGeoStatus},
	{http.MethodGet, PathLookupBase, true, (*Service).handleLookup},
}

// ServeHTTP serves the admin API; mount it on "/api/".
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	var allowed []string
	for _, rt := range routes {
		if rt.path != r.URL.Path && (!rt.prefix || !strings.HasPrefix(r.URL.Path, rt.path)) {
			continue
		}
		if rt.method == r.Method {
			rt.handle(s, w, r)
			return
		}
		allowed = append(allowed, rt.method)
	}
	if len(allowed) == 0 {
		writeError(w, http.StatusNotFound, msgNotFound)
		return
	}
	h.Set("Allow", strings.Join(allowed, ", "))
	writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed", r.Method))
}

type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away; nothing to do
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

func (s *Service) internalError(w http.ResponseWriter, r *http.Request, err error) {
	s.logger.Error("admin API request failed", "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, msgInternal)
}

// retryAfterValue is wait in whole seconds, rounded up, at least 1.
func retryAfterValue(wait time.Duration) string {
	return strconv.FormatInt(max(1, int64(math.Ceil(wait.Seconds()))), 10)
}

func writeTooMany(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("Retry-After", retryAfterValue(wait))
	writeError(w, http.StatusTooManyRequests, msgTooMany)
}

// writeAuthFailed answers a failed login or setup: 401, with Retry-After
// when the client must now wait before its next attempt is checked.
func writeAuthFailed(w http.ResponseWriter, wait time.Duration) {
	if wait > 0 {
		w.Header().Set("Retry-After", retryAfterValue(wait))
	}
	writeError(w, http.StatusUnauthorized, msgAuthFailed)
}

// throttled answers an attempt the limiter refused, and logs it as a
// failure when it is the first refusal of the client's current wait.
func (s *Service) throttled(w http.ResponseWriter, client netip.Addr, action string, v verdict) {
	if v.log {
		s.logFailure(client, action, "throttled")
	}
	writeTooMany(w, v.wait)
}

// requireSetUp answers 503 until the admin password exists.
func (s *Service) requireSetUp(w http.ResponseWriter, r *http.Request) bool {
	done, err := s.isSetUp(r.Context())
	if err != nil {
		s.internalError(w, r, err)
		return false
	}
	if !done {
		writeError(w, http.StatusServiceUnavailable, msgSetupRequired)
		return false
	}
	return true
}

// checkJSONPost enforces the CSRF rules of a state-changing request: a JSON
// content type (which a cross-site form cannot send) and, when the browser
// sends an Origin, the API's own origin.
func (s *Service) checkJSONPost(w http.ResponseWriter, r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, msgBadContentType)
		return false
	}
	if origin, ok := r.Header["Origin"]; ok && (len(origin) != 1 || !s.sameOrigin(r, origin[0])) {
		writeError(w, http.StatusForbidden, msgBadOrigin)
		return false
	}
	return true
}

// sameOrigin compares an Origin header with the origin the request was
// sent to (as the client saw it, through a trusted proxy's X-Forwarded-Proto
// and X-Forwarded-Host).
func (s *Service) sameOrigin(r *http.Request, origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || u.Path != "" || u.User != nil || u.RawQuery != "" {
		return false
	}
	scheme, host := "http", r.Host
	if r.TLS != nil {
		scheme = "https"
	}
	if s.fromTrustedProxy(r) {
		if p := firstHeaderValue(r.Header, "X-Forwarded-Proto"); p != "" {
			scheme = strings.ToLower(p)
		}
		if h := firstHeaderValue(r.Header, "X-Forwarded-Host"); h != "" {
			host = h
		}
	}
	return strings.EqualFold(u.Scheme, scheme) &&
		strings.EqualFold(withoutDefaultPort(u.Host, scheme), withoutDefaultPort(host, scheme))
}

func withoutDefaultPort(host, scheme string) string {
	h, port, err := net.SplitHostPort(host)
	if err != nil {
		return host
	}
	if scheme == "http" && port == "80" || scheme == "https" && port == "443" {
		if strings.Contains(h, ":") {
			return "[" + h + "]"
		}
		return h
	}
	return host
}

func firstHeaderValue(h http.Header, name string) string {
	v := h.Get(name)
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v)
}

// secure reports whether the client reached us over TLS.
func (s *Service) secure(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	return s.fromTrustedProxy(r) && strings.EqualFold(firstHeaderValue(r.Header, "X-Forwarded-Proto"), "https")
}

// decodeBody decodes a JSON request body into dst strictly: at most
// MaxBodyBytes, no unknown fields, nothing after the value.
func decodeBody(w http.ResponseWriter, r *http.Request, dst any) bool {
	if r.ContentLength > MaxBodyBytes {
		writeError(w, http.StatusRequestEntityTooLarge, msgBodyTooLarge)
		return false
	}
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(dst)
	if err == nil {
		if err = dec.Decode(&struct{}{}); errors.Is(err, io.EOF) {
			return true
		} else if err == nil {
			err = errors.New("more than one JSON value")
		}
	}
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, msgBodyTooLarge)
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, "empty request body")
	default:
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+strings.TrimPrefix(err.Error(), "json: "))
	}
	return false
}

// logFailure writes the one stable line per failed authentication that the
// fail2ban filter matches. It never contains the password or a token.
func (s *Service) logFailure(client netip.Addr, action, reason string) {
	s.logger.Warn(LogFailedAuth, "client", clientString(client), "action", action, "reason", reason)
}

// checkPassword runs check (a bcrypt computation) through the password
// gate. When the gate refuses, it answers the request (503 with Retry-After,
// or nothing for a cancelled request), ends the client's attempt and
// returns false.
func (s *Service) checkPassword(w http.ResponseWriter, r *http.Request, client netip.Addr, suspect bool, check func()) bool {
	network, _ := networkKey(client)
	refusal := s.gate.run(r.Context(), network, suspect, check)
	if refusal == nil {
		return true
	}
	if refusal.cancelled {
		s.limiter.end(client, s.now(), attemptAborted)
		writeError(w, http.StatusServiceUnavailable, "request cancelled")
		return false
	}
	// The password was not checked: no failure, but the client is told
	// when to come back, and a retry before that is refused (and logged).
	s.limiter.refused(client, s.now(), refusal.retryAfter)
	s.logSaturation(refusal.retryAfter)
	s.logger.Debug("admin API password check refused: all password check slots busy", "client", clientString(client), "retry_after", refusal.retryAfter)
	w.Header().Set("Retry-After", retryAfterValue(refusal.retryAfter))
	writeError(w, http.StatusServiceUnavailable, msgBusy)
	return false
}

// saturationLogInterval bounds the saturation warnings.
const saturationLogInterval = time.Minute

// logSaturation warns, at most once per saturationLogInterval, that logins
// are being refused because every password check slot is taken.
func (s *Service) logSaturation(retryAfter time.Duration) {
	now := time.Now().UnixNano()
	last := s.saturatedLogged.Load()
	if last != 0 && now-last < int64(saturationLogInterval) || !s.saturatedLogged.CompareAndSwap(last, now) {
		return
	}
	st := s.gate.stats()
	s.logger.Warn("admin API logins refused with 503: every password check slot is busy and the queue is full (a login flood?)",
		"slots", s.gate.workers, "queue", s.gate.queueMax, "retry_after", retryAfter, "refused_total", st.refused)
}

type setupRequest struct {
	SetupToken string `json:"setup_token"`
	Password   string `json:"password"`
}

// handleSetup sets the first admin password: only while none exists, and
// only with the one-time setup token logged at startup.
func (s *Service) handleSetup(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	done, err := s.isSetUp(ctx)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	if done {
		writeError(w, http.StatusConflict, msgAlreadySetUp)
		return
	}
	if !s.checkJSONPost(w, r) {
		return
	}
	var req setupRequest
	if !decodeBody(w, r, &req) {
		return
	}
	client := s.clientAddr(r)
	v := s.limiter.begin(client, s.now())
	if v.wait > 0 {
		s.throttled(w, client, "setup", v)
		return
	}
	given := sha256.Sum256([]byte(req.SetupToken))
	s.setupMu.Lock()
	tokenOK := s.setupTokenSet && subtle.ConstantTimeCompare(given[:], s.setupTokenHash[:]) == 1
	s.setupMu.Unlock()
	if !tokenOK && s.setupDone.Load() {
		// A concurrent setup completed (and spent the token) meanwhile.
		s.limiter.end(client, s.now(), attemptAborted)
		writeError(w, http.StatusConflict, msgAlreadySetUp)
		return
	}
	if !tokenOK {
		wait := s.limiter.end(client, s.now(), attemptFailed)
		s.logFailure(client, "setup", "invalid_setup_token")
		writeAuthFailed(w, wait)
		return
	}
	if err := ValidatePassword(req.Password); err != nil {
		// The token was right; a weak password is no attack.
		s.limiter.end(client, s.now(), attemptSucceeded)
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var hash []byte
	var hashErr error
	if !s.checkPassword(w, r, client, false, func() {
		hash, hashErr = bcrypt.GenerateFromPassword([]byte(req.Password), s.hashCost)
	}) {
		return
	}
	s.limiter.end(client, s.now(), attemptSucceeded)
	if hashErr != nil {
		s.internalError(w, r, fmt.Errorf("hash password: %w", hashErr))
		return
	}
	stored, err := insertFirstPassword(ctx, s.db, hash, s.now())
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	if !stored {
		s.setupDone.Store(true)
		writeError(w, http.StatusConflict, msgAlreadySetUp)
		return
	}
	// setupDone first: an attempt that finds the token spent then sees 409.
	s.setupDone.Store(true)
	s.setupMu.Lock()
	s.setupTokenSet = false
	s.setupTokenHash = [sha256.Size]byte{}
	s.setupMu.Unlock()
	s.logger.Info("admin password set through the setup endpoint", "client", clientString(client))
	writeJSON(w, http.StatusCreated, map[string]string{"status": "setup complete"})
}

type loginRequest struct {
	Password string `json:"password"`
}

// sessionResponse describes a session.
type sessionResponse struct {
	Token     string    `json:"token,omitempty"`
	TokenType string    `json:"token_type,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// ExpiresIn is in whole seconds.
	ExpiresIn int64 `json:"expires_in"`
}

func (s *Service) handleLogin(w http.ResponseWriter, r *http.Request) {
	if !s.requireSetUp(w, r) || !s.checkJSONPost(w, r) {
		return
	}
	var req loginRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if req.Password == "" {
		writeError(w, http.StatusBadRequest, "password is required")
		return
	}
	ctx := r.Context()
	client := s.clientAddr(r)
	v := s.limiter.begin(client, s.now())
	if v.wait > 0 {
		s.throttled(w, client, "login", v)
		return
	}
	// The hash is read only once the check has a slot: a flood reaches
	// neither the database nor bcrypt beyond the gate's bound.
	var hash []byte
	var readErr, cmpErr error
	if !s.checkPassword(w, r, client, v.suspect, func() {
		if hash, readErr = readPasswordHash(ctx, s.db); readErr == nil {
			cmpErr = bcrypt.CompareHashAndPassword(hash, []byte(req.Password))
		}
	}) {
		return
	}
	if readErr != nil {
		// Errors on our side leave the client's backoff as it was.
		s.limiter.end(client, s.now(), attemptAborted)
		s.internalError(w, r, readErr)
		return
	}
	if cmpErr != nil {
		if !errors.Is(cmpErr, bcrypt.ErrMismatchedHashAndPassword) {
			s.limiter.end(client, s.now(), attemptAborted)
			s.internalError(w, r, fmt.Errorf("compare password: %w", cmpErr))
			return
		}
		wait := s.limiter.end(client, s.now(), attemptFailed)
		s.logFailure(client, "login", "wrong_password")
		writeAuthFailed(w, wait)
		return
	}
	s.limiter.end(client, s.now(), attemptSucceeded)

	token, err := newToken()
	if err != nil {
		s.internalError(w, r, fmt.Errorf("session token: %w", err))
		return
	}
	h, _ := parseToken(token)
	now := s.now()
	created := time.UnixMilli(now.UnixMilli())
	expires := time.UnixMilli(now.Add(s.sessionTTL).UnixMilli())
	if err := createSession(ctx, s.db, h, created, expires, clientString(client)); err != nil {
		s.internalError(w, r, err)
		return
	}
	if s.cacheTTL > 0 {
		s.cacheMu.Lock()
		s.cacheLocked(h, session{created: created, expires: expires, trustedUntil: now.Add(s.cacheTTL)}, now)
		s.cacheMu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{
		Name:     CookieName,
		Value:    token,
		Path:     "/api",
		Expires:  expires,
		MaxAge:   int(max(1, math.Round(expires.Sub(now).Seconds()))),
		HttpOnly: true,
		Secure:   s.secure(r),
		SameSite: http.SameSiteStrictMode,
	})
	s.logger.Info("admin API login", "client", clientString(client))
	writeJSON(w, http.StatusOK, sessionResponse{
		Token: token, TokenType: "Bearer",
		CreatedAt: created, ExpiresAt: expires,
		ExpiresIn: int64(math.Round(expires.Sub(now).Seconds())),
	})
}

// maxSessionCookies bounds how many bangui_session cookies of one request
// are checked (each unknown one may cost a database query).
const maxSessionCookies = 4

// authenticate finds the request's session: from `Authorization: Bearer`,
// else from the first valid of its session cookies. A cookie-authenticated
// POST must also pass the CSRF rules. It answers the request itself when it
// returns false.
func (s *Service) authenticate(w http.ResponseWriter, r *http.Request) ([sha256.Size]byte, session, bool) {
	var none [sha256.Size]byte
	if !s.requireSetUp(w, r) {
		return none, session{}, false
	}
	tokens, viaCookie := sessionTokens(r)
	var h [sha256.Size]byte
	var sess session
	found := false
	for _, token := range tokens {
		var ok bool
		if h, ok = parseToken(token); !ok {
			continue
		}
		var err error
		sess, found, err = s.validate(r.Context(), h)
		if err != nil {
			s.internalError(w, r, err)
			return none, session{}, false
		}
		if found {
			break
		}
	}
	if !found {
		unauthorized(w)
		return none, session{}, false
	}
	if viaCookie && r.Method == http.MethodPost && !s.checkJSONPost(w, r) {
		return none, session{}, false
	}
	return h, sess, true
}

// sessionTokens returns the Bearer token or, without one, the values of the
// session cookies (a browser may send several: one per path or domain that
// set it, most specific first), at most maxSessionCookies. Another
// Authorization scheme (Basic, from the exporter-toolkit web config wrapping
// the listener) is left to that layer.
func sessionTokens(r *http.Request) (tokens []string, viaCookie bool) {
	for _, auth := range r.Header.Values("Authorization") {
		scheme, tok, _ := strings.Cut(auth, " ")
		if strings.EqualFold(scheme, "Bearer") {
			return []string{strings.TrimSpace(tok)}, false
		}
	}
	for _, c := range r.CookiesNamed(CookieName) {
		if len(tokens) == maxSessionCookies {
			break
		}
		tokens = append(tokens, c.Value)
	}
	return tokens, len(tokens) > 0
}

func unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="bangui_exporter admin API"`)
	writeError(w, http.StatusUnauthorized, msgAuthFailed)
}

func (s *Service) handleLogout(w http.ResponseWriter, r *http.Request) {
	h, _, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	err := deleteSession(r.Context(), s.db, h)
	s.evict(h)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: "", Path: "/api", MaxAge: -1,
		HttpOnly: true, Secure: s.secure(r), SameSite: http.SameSiteStrictMode,
	})
	writeJSON(w, http.StatusOK, map[string]string{"status": "logged out"})
}

func (s *Service) handleSession(w http.ResponseWriter, r *http.Request) {
	_, sess, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, sessionResponse{
		CreatedAt: sess.created, ExpiresAt: sess.expires,
		ExpiresIn: int64(sess.expires.Sub(s.now()) / time.Second),
	})
}

// requireGeo answers 503 when geo is disabled.
func (s *Service) requireGeo(w http.ResponseWriter) bool {
	if s.geo == nil {
		writeError(w, http.StatusServiceUnavailable, msgGeoDisabled)
		return false
	}
	return true
}

func (s *Service) handleReResolve(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := s.authenticate(w, r); !ok || !s.requireGeo(w) {
		return
	}
	queued := s.geo.ReResolve()
	s.logger.Info("geo re-resolve requested through the admin API", "client", clientString(s.clientAddr(r)), "queued", queued)
	writeJSON(w, http.StatusAccepted, map[string]int{"queued": queued})
}

func (s *Service) handleGeoStatus(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := s.authenticate(w, r); !ok || !s.requireGeo(w) {
		return
	}
	writeJSON(w, http.StatusOK, s.geo.Status())
}

// lookupResponse is geo's entry plus whether geo knew the IP before.
type lookupResponse struct {
	Known bool `json:"known"`
	geoEntry
}

func (s *Service) handleLookup(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := s.authenticate(w, r); !ok || !s.requireGeo(w) {
		return
	}
	ip, err := parseLookupIP(strings.TrimPrefix(r.URL.Path, PathLookupBase))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	entry, known := s.geo.Lookup(ip)
	writeJSON(w, http.StatusOK, lookupResponse{Known: known, geoEntry: geoEntry(entry)})
}

// parseLookupIP accepts one IPv4 or IPv6 address without a zone.
func parseLookupIP(text string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(text)
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("invalid IP address %q", text)
	}
	return ip.Unmap(), nil
}
