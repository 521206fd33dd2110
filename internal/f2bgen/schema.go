package f2bgen

// The schema text below is fail2ban's own (fail2ban/server/database.py,
// Fail2BanDb._CREATE_SCRIPTS of fail2ban 1.0.2 for version 4, and of 0.10 for
// version 2), statement for statement, so sqlite_master holds the very same
// SQL a database created by fail2ban-server holds.

// schemaObject is one CREATE statement and whether it creates an index that
// Generate may build after the rows are loaded.
type schemaObject struct {
	sql       string
	lateIndex bool
}

var schemaV4 = []schemaObject{
	{sql: "CREATE TABLE IF NOT EXISTS fail2banDb(version INTEGER);"},
	{sql: "CREATE TABLE IF NOT EXISTS jails(" +
		"name TEXT NOT NULL UNIQUE, " +
		"enabled INTEGER NOT NULL DEFAULT 1" +
		");"},
	{sql: "CREATE INDEX IF NOT EXISTS jails_name ON jails(name);"},
	{sql: "CREATE TABLE IF NOT EXISTS logs(" +
		"jail TEXT NOT NULL, " +
		"path TEXT, " +
		"firstlinemd5 TEXT, " +
		"lastfilepos INTEGER DEFAULT 0, " +
		"FOREIGN KEY(jail) REFERENCES jails(name) ON DELETE CASCADE, " +
		"UNIQUE(jail, path)," +
		"UNIQUE(jail, path, firstlinemd5)" +
		");"},
	{sql: "CREATE INDEX IF NOT EXISTS logs_path ON logs(path);"},
	{sql: "CREATE INDEX IF NOT EXISTS logs_jail_path ON logs(jail, path);"},
	{sql: "CREATE TABLE IF NOT EXISTS bans(" +
		"jail TEXT NOT NULL, " +
		"ip TEXT, " +
		"timeofban INTEGER NOT NULL, " +
		"bantime INTEGER NOT NULL, " +
		"bancount INTEGER NOT NULL default 1, " +
		"data JSON, " +
		"FOREIGN KEY(jail) REFERENCES jails(name) " +
		");"},
	{sql: "CREATE INDEX IF NOT EXISTS bans_jail_timeofban_ip ON bans(jail, timeofban);", lateIndex: true},
	{sql: "CREATE INDEX IF NOT EXISTS bans_jail_ip ON bans(jail, ip);", lateIndex: true},
	{sql: "CREATE INDEX IF NOT EXISTS bans_ip ON bans(ip);", lateIndex: true},
	{sql: "CREATE TABLE IF NOT EXISTS bips(" +
		"ip TEXT NOT NULL, " +
		"jail TEXT NOT NULL, " +
		"timeofban INTEGER NOT NULL, " +
		"bantime INTEGER NOT NULL, " +
		"bancount INTEGER NOT NULL default 1, " +
		"data JSON, " +
		"PRIMARY KEY(ip, jail), " +
		"FOREIGN KEY(jail) REFERENCES jails(name) " +
		");"},
	{sql: "CREATE INDEX IF NOT EXISTS bips_timeofban ON bips(timeofban);", lateIndex: true},
	{sql: "CREATE INDEX IF NOT EXISTS bips_ip ON bips(ip);", lateIndex: true},
}

var schemaV2 = []schemaObject{
	schemaV4[0], schemaV4[1], schemaV4[2], schemaV4[3], schemaV4[4], schemaV4[5],
	{sql: "CREATE TABLE IF NOT EXISTS bans(" +
		"jail TEXT NOT NULL, " +
		"ip TEXT, " +
		"timeofban INTEGER NOT NULL, " +
		"data JSON, " +
		"FOREIGN KEY(jail) REFERENCES jails(name) " +
		");"},
	{sql: "CREATE INDEX IF NOT EXISTS bans_jail_timeofban_ip ON bans(jail, timeofban);", lateIndex: true},
	{sql: "CREATE INDEX IF NOT EXISTS bans_jail_ip ON bans(jail, ip);", lateIndex: true},
	{sql: "CREATE INDEX IF NOT EXISTS bans_ip ON bans(ip);", lateIndex: true},
}

func schemaFor(version int) []schemaObject {
	if version == 2 {
		return schemaV2
	}
	return schemaV4
}
