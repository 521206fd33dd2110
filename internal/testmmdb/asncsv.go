package testmmdb

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"

	"github.com/maxmind/mmdbwriter"
)

// BuildASNFromCSV writes a database in GeoLite2-ASN's layout to out (by
// rename) from the CSV files of the ip-location-db ASN data set (the npm
// package @ip-location-db/asn: asn-ipv4.csv, asn-ipv6.csv), whose rows are
// "first IP,last IP,AS number,AS organization", ranges inclusive. It
// returns how many ranges it inserted.
func BuildASNFromCSV(out string, csvPaths ...string) (int, error) {
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType: "GeoLite2-ASN",
		Description:  map[string]string{"en": "ip-location-db ASN (CC BY 4.0, RouteViews, DB-IP, NRO) in GeoLite2-ASN layout, for tests"},
		RecordSize:   28,
		// The data as it is: some of its ranges lie in networks mmdbwriter
		// reserves by default (documentation ranges, 6to4).
		IncludeReservedNetworks: true,
		// The IPv6 data has ranges of its own in 2001::/32 and 2002::/16,
		// where mmdbwriter would otherwise alias IPv4; IPv4 addresses are
		// found under ::/96 all the same.
		DisableIPv4Aliasing: true,
	})
	if err != nil {
		return 0, fmt.Errorf("new tree: %w", err)
	}
	n := 0
	for _, path := range csvPaths {
		k, err := insertASNCSV(tree, path)
		n += k
		if err != nil {
			return n, err
		}
	}
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return n, fmt.Errorf("create %s: %w", tmp, err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		_ = f.Close()
		return n, fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return n, fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return n, fmt.Errorf("rename to %s: %w", out, err)
	}
	return n, nil
}

func insertASNCSV(tree *mmdbwriter.Tree, path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", path, err)
	}
	defer func() { _ = f.Close() }()
	r := csv.NewReader(f)
	r.FieldsPerRecord = 4
	r.ReuseRecord = true
	n := 0
	for line := 1; ; line++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("%s: %w", path, err)
		}
		first, last := net.ParseIP(rec[0]), net.ParseIP(rec[1])
		number, nerr := strconv.ParseUint(rec[2], 10, 32)
		if first == nil || last == nil || nerr != nil {
			return n, fmt.Errorf("%s:%d: not \"first IP,last IP,AS number,organization\": %q", path, line, rec)
		}
		if err := tree.InsertRange(first, last, asnRecord(uint32(number), rec[3])); err != nil {
			return n, fmt.Errorf("%s:%d: insert %s-%s: %w", path, line, rec[0], rec[1], err)
		}
		n++
	}
}
