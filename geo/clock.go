package geo

import (
	"context"
	"time"
)

// Clock is the time source of the resolver and the providers. Tests inject
// one that only moves when the code under test waits, so pacing is tested
// without sleeping.
type Clock interface {
	Now() time.Time
	// Sleep waits for d or until ctx is done, whichever comes first; it
	// returns ctx.Err() in the second case.
	Sleep(ctx context.Context, d time.Duration) error
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// Sleep waits for d or until ctx is done.
func (SystemClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
