// Command asnmmdb builds a MaxMind-format database in GeoLite2-ASN's layout
// from the CSV files of the ip-location-db ASN data set, for tests
// (scripts/fetch-geoip.sh runs it):
//
//	go run ./internal/testmmdb/asnmmdb -out asn.mmdb asn-ipv4.csv asn-ipv6.csv
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/bangui/bangui_exporter/internal/testmmdb"
)

func main() {
	out := flag.String("out", "", "path of the database to write")
	flag.Parse()
	if *out == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: asnmmdb -out FILE CSV...")
		os.Exit(2)
	}
	n, err := testmmdb.BuildASNFromCSV(*out, flag.Args()...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "asnmmdb: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "asnmmdb: %d ranges written to %s\n", n, *out)
}
