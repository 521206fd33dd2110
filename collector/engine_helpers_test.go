package collector

import (
	"testing"
	"time"
	"unicode/utf8"
)

// newTestEngine is an engine with windows of 1h and 1d over schema, without
// geo, for unit tests of one concern.
func newTestEngine(t testing.TB, schema int) *engine {
	t.Helper()
	return newEngine(NoCountries{}, windowsOf(t, "1h", "1d"), schema, 10*time.Minute, nil)
}

// testRow is a valid row of bans or bips as the source reads it.
func testRow(rowid int64, jail, ip string, timeOfBan, bantime int64) sourceRow {
	return sourceRow{
		Rowid: rowid, Jail: jail, IP: ip, TimeOfBan: timeOfBan, Bantime: bantime,
		IPLen: int64(utf8.RuneCountInString(ip)), JailLen: int64(utf8.RuneCountInString(jail)),
		TimeValid: true, BanValid: true, HasBantime: true,
	}
}
