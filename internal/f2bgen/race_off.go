//go:build !race

package f2bgen

const raceEnabled = false
