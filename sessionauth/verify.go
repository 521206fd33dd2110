package sessionauth

import (
	"context"
	"errors"

	"golang.org/x/crypto/bcrypt"

	"github.com/bangui/bangui_exporter/internal/appdb"
)

// VerifyPassword reports whether password is the admin password stored in
// db; false, nil when it differs or none is set. It is for tools and tests
// (e.g. after "admin set-password") that must not read the settings table
// themselves.
func VerifyPassword(ctx context.Context, db *appdb.DB, password string) (bool, error) {
	set, err := hasPassword(ctx, db)
	if err != nil || !set {
		return false, err
	}
	hash, err := readPasswordHash(ctx, db)
	if err != nil {
		return false, err
	}
	err = bcrypt.CompareHashAndPassword(hash, []byte(password))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, bcrypt.ErrMismatchedHashAndPassword):
		return false, nil
	}
	return false, err
}
