package sessionauth

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"

	"github.com/bangui/bangui_exporter/internal/appdb"
)

// component is this package's name in appdb's schema_versions.
const component = "sessionauth"

// passwordKey is the settings row holding the admin password's bcrypt hash.
const passwordKey = "admin_password_bcrypt"

// Password rules.
const (
	// MinPasswordLength is counted in characters (Unicode code points).
	MinPasswordLength = 12
	// MaxPasswordBytes is bcrypt's input limit.
	MaxPasswordBytes = 72
	// DefaultHashCost is the bcrypt cost of stored passwords.
	DefaultHashCost = 12
)

// migrations of the settings and sessions tables. Times are Unix
// milliseconds.
var migrations = []appdb.Migration{
	{Version: 1, SQL: `
CREATE TABLE settings (
	key        TEXT PRIMARY KEY,
	value      TEXT NOT NULL,
	updated_at INTEGER NOT NULL
);
CREATE TABLE sessions (
	token_sha256 BLOB PRIMARY KEY CHECK (length(token_sha256) = 32),
	created_at   INTEGER NOT NULL,
	expires_at   INTEGER NOT NULL,
	client_addr  TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_expires_at ON sessions(expires_at);`},
}

func migrate(ctx context.Context, db *appdb.DB) error {
	if err := db.Migrate(ctx, component, migrations); err != nil {
		return fmt.Errorf("sessionauth: %w", err)
	}
	return nil
}

// ErrPasswordTooShort and ErrPasswordTooLong are the password rules'
// errors.
var (
	ErrPasswordTooShort = fmt.Errorf("the admin password must be at least %d characters long", MinPasswordLength)
	ErrPasswordTooLong  = fmt.Errorf("the admin password must be at most %d bytes long", MaxPasswordBytes)
)

// ValidatePassword checks the password rules.
func ValidatePassword(password string) error {
	if utf8.RuneCountInString(password) < MinPasswordLength {
		return ErrPasswordTooShort
	}
	if len(password) > MaxPasswordBytes {
		return ErrPasswordTooLong
	}
	return nil
}

// SetPassword validates password, stores its bcrypt hash as the admin
// password (replacing any earlier one) and deletes every session, in one
// transaction. It is what `bangui_exporter admin set-password` runs; a
// running exporter may keep honouring a deleted session for up to its
// session cache TTL. It returns how many sessions were deleted.
func SetPassword(ctx context.Context, db *appdb.DB, password string) (revoked int64, err error) {
	return setPassword(ctx, db, password, DefaultHashCost)
}

func setPassword(ctx context.Context, db *appdb.DB, password string, cost int) (int64, error) {
	if err := ValidatePassword(password); err != nil {
		return 0, err
	}
	if err := migrate(ctx, db); err != nil {
		return 0, err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return 0, fmt.Errorf("sessionauth: hash password: %w", err)
	}
	tx, err := db.Writer.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("sessionauth: set password: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	if _, err := tx.ExecContext(ctx, `INSERT INTO settings(key, value, updated_at) VALUES(?, ?, ?)
		ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
		passwordKey, string(hash), time.Now().UnixMilli()); err != nil {
		return 0, fmt.Errorf("sessionauth: set password: %w", err)
	}
	res, err := tx.ExecContext(ctx, "DELETE FROM sessions")
	if err != nil {
		return 0, fmt.Errorf("sessionauth: set password: revoke sessions: %w", err)
	}
	revoked, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("sessionauth: set password: revoke sessions: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("sessionauth: set password: commit: %w", err)
	}
	return revoked, nil
}

// insertFirstPassword stores hash only when no admin password exists; it
// reports whether it did.
func insertFirstPassword(ctx context.Context, db *appdb.DB, hash []byte, now time.Time) (bool, error) {
	res, err := db.Writer.ExecContext(ctx, `INSERT INTO settings(key, value, updated_at) VALUES(?, ?, ?)
		ON CONFLICT(key) DO NOTHING`, passwordKey, string(hash), now.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("sessionauth: store password: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("sessionauth: store password: %w", err)
	}
	return n == 1, nil
}

func hasPassword(ctx context.Context, db *appdb.DB) (bool, error) {
	var one int
	err := db.Reader.QueryRowContext(ctx, "SELECT 1 FROM settings WHERE key = ?", passwordKey).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("sessionauth: read settings: %w", err)
	}
	return true, nil
}

func readPasswordHash(ctx context.Context, db *appdb.DB) ([]byte, error) {
	var hash string
	err := db.Reader.QueryRowContext(ctx, "SELECT value FROM settings WHERE key = ?", passwordKey).Scan(&hash)
	if err != nil {
		return nil, fmt.Errorf("sessionauth: read password hash: %w", err)
	}
	return []byte(hash), nil
}

// createSession stores a new session and deletes expired ones, in one
// transaction.
func createSession(ctx context.Context, db *appdb.DB, h [sha256.Size]byte, created, expires time.Time, client string) error {
	tx, err := db.Writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sessionauth: create session: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	if _, err := tx.ExecContext(ctx, "DELETE FROM sessions WHERE expires_at <= ?", created.UnixMilli()); err != nil {
		return fmt.Errorf("sessionauth: prune sessions: %w", err)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO sessions(token_sha256, created_at, expires_at, client_addr) VALUES(?, ?, ?, ?)",
		h[:], created.UnixMilli(), expires.UnixMilli(), client); err != nil {
		return fmt.Errorf("sessionauth: create session: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sessionauth: create session: commit: %w", err)
	}
	return nil
}

func readSession(ctx context.Context, db *appdb.DB, h [sha256.Size]byte) (created, expires time.Time, found bool, err error) {
	var c, e int64
	err = db.Reader.QueryRowContext(ctx, "SELECT created_at, expires_at FROM sessions WHERE token_sha256 = ?", h[:]).Scan(&c, &e)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, time.Time{}, false, fmt.Errorf("sessionauth: read session: %w", err)
	}
	return time.UnixMilli(c), time.UnixMilli(e), true, nil
}

func deleteSession(ctx context.Context, db *appdb.DB, h [sha256.Size]byte) error {
	if _, err := db.Writer.ExecContext(ctx, "DELETE FROM sessions WHERE token_sha256 = ?", h[:]); err != nil {
		return fmt.Errorf("sessionauth: delete session: %w", err)
	}
	return nil
}
