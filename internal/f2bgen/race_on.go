//go:build race

package f2bgen

// raceEnabled: this binary runs under the race detector, which makes the
// in-process SQLite loader about 20 times slower.
const raceEnabled = true
