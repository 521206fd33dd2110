package sessionauth

import (
	"bytes"
	"encoding/json"
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// strictDecode mirrors what the API must accept: one JSON object with only
// known fields.
func strictDecode(body string, dst any) bool {
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if dec.Decode(dst) != nil {
		return false
	}
	return dec.Decode(&struct{}{}) == io.EOF
}

func checkJSONBody(t *testing.T, body []byte) {
	t.Helper()
	if !json.Valid(body) {
		t.Fatalf("response is not JSON: %q", body)
	}
}

func FuzzLoginBody(f *testing.F) {
	for _, seed := range []string{
		`{"password":"` + testPassword + `"}`,
		`{"password":"wrong"}`,
		`{"password":""}`,
		`{}`, `null`, `[]`, `"x"`, ``, `{"password":1}`, `{"password":"x","extra":1}`,
		`{"password":"` + testPassword + `"} x`, `{"PASSWORD":"` + testPassword + `"}`,
		`{"password":"\u0000"}`, `{"password":"\ud800"}`, strings.Repeat("[", 10000),
	} {
		f.Add(seed)
	}
	fx := newFixture(f, true)
	f.Fuzz(func(t *testing.T, body string) {
		fx.t = t
		fx.clock.Advance(backoffMax) // every input gets checked, not throttled
		rec := fx.do(req{method: "POST", path: PathLogin, body: body, contentType: "application/json"})
		checkJSONBody(t, rec.Body.Bytes())
		var parsed loginRequest
		valid := strictDecode(body, &parsed)
		switch rec.Code {
		case 200:
			if !valid || parsed.Password != testPassword {
				t.Fatalf("login accepted body %q", body)
			}
		case 401:
			if !valid || parsed.Password == testPassword || parsed.Password == "" {
				t.Fatalf("401 for body %q", body)
			}
		case 400:
			if valid && parsed.Password != "" {
				t.Fatalf("400 for valid body %q: %s", body, rec.Body)
			}
		case 413:
			if len(body) <= MaxBodyBytes {
				t.Fatalf("413 for %d bytes", len(body))
			}
		default:
			t.Fatalf("status %d for body %q: %s", rec.Code, body, rec.Body)
		}
	})
}

func FuzzSetupBody(f *testing.F) {
	for _, seed := range []string{
		`{"setup_token":"x","password":"` + testPassword + `"}`,
		`{"setup_token":"","password":""}`,
		`{"password":"` + testPassword + `"}`,
		`{"setup_token":null}`, `{}`, `null`, `1`, `{"setup_token":"x","password":"p","x":1}`,
	} {
		f.Add(seed)
	}
	fx := newFixture(f, false)
	f.Fuzz(func(t *testing.T, body string) {
		fx.t = t
		fx.clock.Advance(backoffMax)
		rec := fx.do(req{method: "POST", path: PathSetup, body: body, contentType: "application/json"})
		checkJSONBody(t, rec.Body.Bytes())
		var parsed setupRequest
		valid := strictDecode(body, &parsed)
		switch rec.Code {
		case 401:
			if !valid {
				t.Fatalf("401 for invalid body %q", body)
			}
		case 400:
			if valid {
				t.Fatalf("400 for a valid body with a wrong token %q: %s", body, rec.Body)
			}
		case 413:
			if len(body) <= MaxBodyBytes {
				t.Fatalf("413 for %d bytes", len(body))
			}
		default:
			// The fuzzer cannot know the random token: nothing else is
			// possible.
			t.Fatalf("status %d for body %q: %s", rec.Code, body, rec.Body)
		}
	})
}

func FuzzLookupPath(f *testing.F) {
	for _, seed := range []string{
		"192.0.2.1", "::1", "::ffff:192.0.2.1", "2001:db8::1", "fe80::1%eth0", "", "/", "1.2.3.4/24",
		"01.2.3.4", "1.2.3", "::ffff:1.2.3.4%x", "[::1]", " 1.2.3.4", "1.2.3.4\x00", strings.Repeat("1", 5000),
	} {
		f.Add(seed)
	}
	fx := newFixture(f, true)
	tok := fx.login("")
	f.Fuzz(func(t *testing.T, suffix string) {
		fx.t = t
		before := len(fx.geo.lookups)
		rec := fx.do(req{method: "GET", path: PathLookupBase + suffix, bearer: tok})
		checkJSONBody(t, rec.Body.Bytes())
		ip, err := netip.ParseAddr(suffix)
		valid := err == nil && ip.Zone() == ""
		switch rec.Code {
		case 200:
			if !valid {
				t.Fatalf("200 for %q", suffix)
			}
			var got map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || got["ip"] != ip.Unmap().String() {
				t.Fatalf("lookup %q answered %s", suffix, rec.Body)
			}
			fx.geo.mu.Lock()
			asked := slices.Clone(fx.geo.lookups[before:])
			fx.geo.mu.Unlock()
			if len(asked) != 1 || asked[0] != ip.Unmap() {
				t.Fatalf("geo asked %v for %q", asked, suffix)
			}
		case 400:
			if valid {
				t.Fatalf("400 for valid %q", suffix)
			}
			if !bytes.Contains(rec.Body.Bytes(), []byte("invalid IP address")) {
				t.Fatalf("400 body %s", rec.Body)
			}
		default:
			t.Fatalf("status %d for %q: %s", rec.Code, suffix, rec.Body)
		}
	})
}
