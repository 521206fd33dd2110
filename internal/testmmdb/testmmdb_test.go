package testmmdb

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/oschwald/maxminddb-golang/v2"
)

func TestWriteAndRead(t *testing.T) {
	for _, tc := range []struct {
		name   string
		layout Layout
		ip     string
		want   string
	}{
		{"official network", Official, "8.8.8.8", "US"},
		{"official single address", Official, "2001:db8::1", "IS"},
		{"official registered only", Official, "2.16.1.1", ""},
		{"flat", Flat, "8.8.4.4", "US"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "t.mmdb")
			Write(t, path, Options{Layout: tc.layout, BuildEpoch: 1700000000}, []Network{
				{CIDR: "8.8.0.0/16", Country: "US", Name: "United States"},
				{CIDR: "2001:db8::1", Country: "IS", Name: "Iceland"},
				{CIDR: "2.16.0.0/16", Registered: "EU"},
			})
			r, err := maxminddb.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = r.Close() }()
			if r.Metadata.BuildEpoch != 1700000000 {
				t.Errorf("build epoch %d", r.Metadata.BuildEpoch)
			}
			var rec struct {
				Country struct {
					ISOCode string `maxminddb:"iso_code"`
				} `maxminddb:"country"`
				CountryCode string `maxminddb:"country_code"`
			}
			if err := r.Lookup(netip.MustParseAddr(tc.ip)).Decode(&rec); err != nil {
				t.Fatal(err)
			}
			got := rec.Country.ISOCode
			if tc.layout == Flat {
				got = rec.CountryCode
			}
			if got != tc.want {
				t.Errorf("%s: country %q, want %q", tc.ip, got, tc.want)
			}
		})
	}
}
