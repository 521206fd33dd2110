package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
)

// lifecycle holds what the parts start and stop, by phase (see the phase
// constants in main.go for the order). Registration order across the
// main_*.go files does not matter: the phase does.
type lifecycle struct {
	// background runs for the life of the process, stopped by its context
	// at its phase.
	background [numPhases][]func(context.Context)
	// steps run at their phase, after that phase's background work stopped,
	// in the order they were added.
	steps [numPhases][]func(context.Context) error

	mu      sync.Mutex
	cancels [numPhases]context.CancelFunc
	done    [numPhases]chan struct{}
	stopped bool
}

// goBackground runs fn from start until its phase of the shutdown.
func (l *lifecycle) goBackground(p phase, fn func(context.Context)) {
	l.background[p] = append(l.background[p], fn)
}

// atShutdown runs fn at phase p of the shutdown.
func (l *lifecycle) atShutdown(p phase, fn func(context.Context) error) {
	l.steps[p] = append(l.steps[p], fn)
}

// start runs every phase's background work, each phase under its own
// context derived from ctx without its cancellation (stop cancels them).
func (l *lifecycle) start(ctx context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p := range numPhases {
		if len(l.background[p]) == 0 {
			continue
		}
		pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		l.cancels[p], l.done[p] = cancel, done
		go func() {
			defer close(done)
			runAll(pctx, l.background[p])
		}()
	}
}

// stop runs the shutdown, phase by phase in order: the phase's background
// work is cancelled and waited for (at most until ctx ends), then its steps
// run. It runs once; later calls do nothing.
func (l *lifecycle) stop(ctx context.Context, logger *slog.Logger) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	l.stopped = true
	for p := range numPhases {
		if cancel := l.cancels[p]; cancel != nil {
			cancel()
			select {
			case <-l.done[p]:
			case <-ctx.Done():
				logger.Error("shutdown: background work did not stop in time", "phase", p.String(), "err", ctx.Err())
			}
		}
		for _, step := range l.steps[p] {
			if err := step(ctx); err != nil {
				logger.Error("shutdown step failed", "phase", p.String(), "err", err)
			}
		}
	}
}

// runAll runs every function in its own goroutine and waits for all.
func runAll(ctx context.Context, fns []func(context.Context)) {
	var wg sync.WaitGroup
	for _, fn := range fns {
		wg.Go(func() { fn(ctx) })
	}
	wg.Wait()
}

func (p phase) String() string {
	switch p {
	case phaseWorkers:
		return "workers"
	case phaseEngine:
		return "engine"
	case phaseArchive:
		return "archive"
	case phaseGeo:
		return "geo"
	case phaseSocket:
		return "socket"
	case phaseStorage:
		return "storage"
	}
	return fmt.Sprintf("phase(%d)", int(p))
}
