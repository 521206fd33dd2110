package sessionauth

import (
	"context"
	"testing"
	"time"
)

func TestNewValidatesOptions(t *testing.T) {
	db := openCountingDB(t).DB
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"no database", Options{}, "sessionauth: no app database"},
		{"negative session TTL", Options{DB: db, SessionTTL: -time.Hour}, "sessionauth: session TTL must not be negative, got -1h0m0s"},
		{"negative cache TTL", Options{DB: db, SessionCacheTTL: -time.Second}, "sessionauth: session cache TTL must not be negative, got -1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(context.Background(), tt.opts); err == nil || err.Error() != tt.wantErr {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
