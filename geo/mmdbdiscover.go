package geo

import (
	"fmt"
	"os"
	"path/filepath"
)

// StandardMMDBPaths are where geoipupdate (/var/lib/GeoIP, its default
// DatabaseDirectory on Debian) and distribution packages (/usr/share/GeoIP)
// put MaxMind-format country databases, in the order DiscoverMMDB tries
// them: the paid GeoIP2 database is preferred only where GeoLite2 is absent,
// so a host's default download wins over an old package.
func StandardMMDBPaths() []string {
	var paths []string
	for _, dir := range []string{"/var/lib/GeoIP", "/usr/share/GeoIP"} {
		for _, name := range []string{"GeoLite2-Country.mmdb", "GeoIP2-Country.mmdb"} {
			paths = append(paths, filepath.Join(dir, name))
		}
	}
	return paths
}

// DiscoverMMDB returns the first of paths that is a regular, non-empty file
// the process can open, and "" when there is none. skipped explains each
// path that exists but was passed over (a directory, an empty file, no read
// permission), so the caller can log why a present file was not used.
func DiscoverMMDB(paths []string) (path string, skipped []string) {
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			if !os.IsNotExist(err) {
				skipped = append(skipped, fmt.Sprintf("%s: %v", p, err))
			}
			continue
		}
		if !fi.Mode().IsRegular() {
			skipped = append(skipped, p+": not a regular file")
			continue
		}
		if fi.Size() == 0 {
			skipped = append(skipped, p+": empty file")
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("%s: %v", p, err))
			continue
		}
		_ = f.Close()
		return p, skipped
	}
	return "", skipped
}
