package socket

import (
	"context"
	"fmt"
	"math/big"
	"strconv"
	"strings"

	ogorek "github.com/kisielk/og-rek"
)

// Ping asks fail2ban for "pong".
func (c *Client) Ping(ctx context.Context) error {
	v, err := c.Command(ctx, "ping")
	if err != nil {
		return err
	}
	if s, ok := v.(string); !ok || s != "pong" {
		return fmt.Errorf("%w: ping answered %s, want \"pong\"", ErrProtocol, describe(v))
	}
	return nil
}

// Version returns fail2ban's version ("1.0.2").
func (c *Client) Version(ctx context.Context) (string, error) {
	v, err := c.Command(ctx, "version")
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%w: version answered %s", ErrProtocol, describe(v))
	}
	return s, nil
}

// DBFile returns the path of fail2ban's database ("get dbfile"). ok is
// false when fail2ban runs without a database (dbfile = None); an in-memory
// database is returned as ":memory:", which callers cannot open either.
func (c *Client) DBFile(ctx context.Context) (path string, ok bool, err error) {
	v, err := c.Command(ctx, "get", "dbfile")
	if err != nil {
		return "", false, err
	}
	switch v := v.(type) {
	case ogorek.None:
		return "", false, nil
	case string:
		return v, v != "", nil
	}
	return "", false, fmt.Errorf("%w: get dbfile answered %s", ErrProtocol, describe(v))
}

// DBPurgeAge returns fail2ban's dbpurgeage in seconds ("get dbpurgeage");
// ok is false without a database.
func (c *Client) DBPurgeAge(ctx context.Context) (seconds float64, ok bool, err error) {
	v, err := c.Command(ctx, "get", "dbpurgeage")
	if err != nil {
		return 0, false, err
	}
	if _, isNone := v.(ogorek.None); isNone {
		return 0, false, nil
	}
	f, err := toFloat(v)
	if err != nil {
		return 0, false, fmt.Errorf("get dbpurgeage: %w", err)
	}
	return f, true, nil
}

// Jails returns the names of the running jails ("status").
func (c *Client) Jails(ctx context.Context) ([]string, error) {
	v, err := c.Command(ctx, "status")
	if err != nil {
		return nil, err
	}
	pairs, err := statusPairs(v)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	list, ok := pairs["Jail list"].(string)
	if !ok {
		return nil, fmt.Errorf("%w: status has no \"Jail list\" string: %s", ErrProtocol, describe(v))
	}
	var jails []string
	for name := range strings.SplitSeq(list, ",") {
		if name = strings.TrimSpace(name); name != "" {
			jails = append(jails, name)
		}
	}
	return jails, nil
}

// JailStatus holds the counters of "status JAIL short".
type JailStatus struct {
	CurrentlyFailed float64
	TotalFailed     float64
	CurrentlyBanned float64
	TotalBanned     float64
}

// JailStatus runs "status JAIL short": the counters without the banned-IP
// list, which the long form returns in full.
func (c *Client) JailStatus(ctx context.Context, jail string) (JailStatus, error) {
	v, err := c.Command(ctx, "status", jail, "short")
	if err != nil {
		return JailStatus{}, err
	}
	return parseJailStatus(jail, v)
}

func parseJailStatus(jail string, v any) (JailStatus, error) {
	top, err := statusPairs(v)
	if err != nil {
		return JailStatus{}, fmt.Errorf("status %s: %w", jail, err)
	}
	var st JailStatus
	for _, section := range []string{"Filter", "Actions"} {
		inner, err := statusPairs(top[section])
		if err != nil {
			return JailStatus{}, fmt.Errorf("status %s: section %s: %w", jail, section, err)
		}
		fields := map[string]*float64{
			"Currently failed": &st.CurrentlyFailed, "Total failed": &st.TotalFailed,
			"Currently banned": &st.CurrentlyBanned, "Total banned": &st.TotalBanned,
		}
		for key, target := range fields {
			raw, present := inner[key]
			if !present {
				continue
			}
			f, err := toFloat(raw)
			if err != nil {
				return JailStatus{}, fmt.Errorf("status %s: %s: %w", jail, key, err)
			}
			*target = f
			delete(fields, key)
		}
	}
	for _, key := range []string{"Currently banned", "Total banned"} {
		actions, _ := statusPairs(top["Actions"])
		if _, ok := actions[key]; !ok {
			return JailStatus{}, fmt.Errorf("%w: status %s has no %q: %s", ErrProtocol, jail, key, describe(v))
		}
	}
	return st, nil
}

// JailSetting runs "get JAIL NAME" for a numeric setting (bantime,
// findtime, maxretry).
func (c *Client) JailSetting(ctx context.Context, jail, name string) (float64, error) {
	v, err := c.Command(ctx, "get", jail, name)
	if err != nil {
		return 0, err
	}
	f, err := toFloat(v)
	if err != nil {
		return 0, fmt.Errorf("get %s %s: %w", jail, name, err)
	}
	return f, nil
}

// statusPairs turns fail2ban's status answer — a list of (name, value)
// tuples — into a map.
func statusPairs(v any) (map[string]any, error) {
	items, ok := v.([]any)
	if !ok {
		if t, isTuple := v.(ogorek.Tuple); isTuple {
			items, ok = []any(t), true
		}
	}
	if !ok {
		return nil, fmt.Errorf("%w: want a list of (name, value) pairs, got %s", ErrProtocol, describe(v))
	}
	pairs := make(map[string]any, len(items))
	for _, item := range items {
		var pair []any
		switch p := item.(type) {
		case ogorek.Tuple:
			pair = p
		case []any:
			pair = p
		}
		if len(pair) != 2 {
			return nil, fmt.Errorf("%w: want a (name, value) pair, got %s", ErrProtocol, describe(item))
		}
		name, ok := pair[0].(string)
		if !ok {
			return nil, fmt.Errorf("%w: pair name is %s", ErrProtocol, describe(pair[0]))
		}
		pairs[name] = pair[1]
	}
	return pairs, nil
}

// toFloat converts a decoded Python number (or a numeric string, which old
// fail2ban versions return for some settings) to float64.
func toFloat(v any) (float64, error) {
	switch n := v.(type) {
	case int64:
		return float64(n), nil
	case float64:
		return n, nil
	case bool:
		if n {
			return 1, nil
		}
		return 0, nil
	case *big.Int:
		f, _ := new(big.Float).SetInt(n).Float64()
		return f, nil
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(n), 64)
		if err != nil {
			return 0, fmt.Errorf("%w: %q is not a number", ErrProtocol, n)
		}
		return f, nil
	}
	return 0, fmt.Errorf("%w: %s is not a number", ErrProtocol, describe(v))
}
