// Package duration parses the durations of bangui_exporter's flags in one
// dialect: Go durations ("1.5h", "500ms", "-5s"), then Prometheus durations,
// which add the units d (24h), w (7d) and y (365d) and combinations such as
// "1d12h".
package duration

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// Parse parses s (surrounding spaces ignored) as a Go duration, or, when
// that fails, as a Prometheus duration.
func Parse(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty duration")
	}
	if d, err := time.ParseDuration(s); err == nil {
		return d, nil
	}
	d, err := model.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: not a Go duration (1.5h, 500ms) nor a Prometheus one (7d, 1y, 1d12h)", s)
	}
	return time.Duration(d), nil
}
