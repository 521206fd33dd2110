// Package testmmdb writes small MaxMind-format databases for tests, in the
// official GeoLite2/GeoIP2 Country layout or the flat country_code layout of
// DB-IP lite and ip-location-db, with github.com/maxmind/mmdbwriter.
//
// Files are put in place by rename, as geoipupdate does, so a reader that
// watches the path never sees a half-written file.
package testmmdb

import (
	"net"
	"os"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// Layout is the record layout of a database.
type Layout int

const (
	// Official is GeoLite2-Country's layout: country.iso_code,
	// country.names, registered_country.iso_code.
	Official Layout = iota
	// Flat is the country_code layout of DB-IP lite and ip-location-db.
	Flat
	// City is GeoLite2-City's layout: Official's fields plus city.names
	// and location (latitude, longitude, accuracy_radius).
	City
	// ASN is GeoLite2-ASN's layout: autonomous_system_number and
	// autonomous_system_organization.
	ASN
)

// Network is one network of a test database.
type Network struct {
	// CIDR is the network, e.g. "8.8.8.0/24" or "2001:db8::/32"; a bare
	// address means that one address.
	CIDR string
	// Country is country.iso_code (Official) or country_code (Flat).
	Country string
	// Name is country.names.en (Official only).
	Name string
	// Registered is registered_country.iso_code (Official only).
	Registered string
	// City is city.names.en (City only; left out when empty).
	City string
	// Lat and Lon are location.latitude and location.longitude (City
	// only; location is left out when both are 0).
	Lat, Lon float64
	// ASNumber and ASOrg are the ASN layout's fields.
	ASNumber uint32
	ASOrg    string
}

// Options describe the file.
type Options struct {
	Layout Layout
	// BuildEpoch is the database's build time (Unix seconds); 0 lets
	// mmdbwriter use the current time.
	BuildEpoch int64
	// IPv4Only writes an IPv4 tree (ip_version 4) instead of IPv6.
	IPv4Only bool
}

// Write writes a database holding nets to path (replacing it by rename).
func Write(tb testing.TB, path string, opts Options, nets []Network) {
	tb.Helper()
	dbType := map[Layout]string{Official: "GeoLite2-Country", Flat: "ip-location-db-country", City: "GeoLite2-City", ASN: "GeoLite2-ASN"}[opts.Layout]
	mo := mmdbwriter.Options{
		DatabaseType:            dbType,
		BuildEpoch:              opts.BuildEpoch,
		IncludeReservedNetworks: true,
		RecordSize:              28,
	}
	if opts.IPv4Only {
		mo.IPVersion, mo.RecordSize = 4, 24
	}
	tree, err := mmdbwriter.New(mo)
	if err != nil {
		tb.Fatal(err)
	}
	for _, n := range nets {
		ipnet, err := parseNetwork(n.CIDR)
		if err != nil {
			tb.Fatalf("testmmdb: %v", err)
		}
		if err := tree.Insert(ipnet, record(opts.Layout, n)); err != nil {
			tb.Fatalf("testmmdb: insert %s: %v", n.CIDR, err)
		}
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		_ = f.Close()
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
}

func parseNetwork(s string) (*net.IPNet, error) {
	if _, n, err := net.ParseCIDR(s); err == nil {
		return n, nil
	}
	ip := net.ParseIP(s)
	if ip == nil {
		return nil, &net.ParseError{Type: "CIDR address or IP address", Text: s}
	}
	bits := 128
	if v4 := ip.To4(); v4 != nil {
		ip, bits = v4, 32
	}
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}, nil
}

func record(layout Layout, n Network) mmdbtype.Map {
	switch layout {
	case Flat:
		return mmdbtype.Map{"country_code": mmdbtype.String(n.Country)}
	case ASN:
		return asnRecord(n.ASNumber, n.ASOrg)
	}
	rec := mmdbtype.Map{"continent": mmdbtype.Map{"code": mmdbtype.String("EU")}}
	if n.Country != "" {
		rec["country"] = mmdbtype.Map{
			"iso_code": mmdbtype.String(n.Country),
			"names":    mmdbtype.Map{"en": mmdbtype.String(n.Name), "de": mmdbtype.String("x")},
		}
	}
	if n.Registered != "" {
		rec["registered_country"] = mmdbtype.Map{"iso_code": mmdbtype.String(n.Registered)}
	}
	if layout == City {
		if n.City != "" {
			rec["city"] = mmdbtype.Map{"geoname_id": mmdbtype.Uint32(1), "names": mmdbtype.Map{"en": mmdbtype.String(n.City)}}
		}
		if n.Lat != 0 || n.Lon != 0 {
			rec["location"] = mmdbtype.Map{
				"latitude": mmdbtype.Float64(n.Lat), "longitude": mmdbtype.Float64(n.Lon), "accuracy_radius": mmdbtype.Uint16(20),
			}
		}
	}
	return rec
}

func asnRecord(number uint32, org string) mmdbtype.Map {
	rec := mmdbtype.Map{"autonomous_system_number": mmdbtype.Uint32(number)}
	if org != "" {
		rec["autonomous_system_organization"] = mmdbtype.String(org)
	}
	return rec
}
