package keypool

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestNewRejectsBadOptions(t *testing.T) {
	for _, opt := range []Option{WithMaxWait(0), WithCooldown(-1), WithMaxCooldown(0), WithDisableFor(0), WithEjection(0, 1), WithEjection(1, 0)} {
		if _, err := New([]Key{{Secret: "sk-a"}}, opt); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("bad option accepted: %v", err)
		}
	}
}

// A transport option given a value it cannot use makes NewTransport panic
// with an error that wraps ErrInvalidConfig and names the option.
func TestNewTransportRejectsBadOptions(t *testing.T) {
	p, _ := newFakeClockPool(t, keysOf("sk-a"))
	for name, opt := range map[string]TransportOption{
		"WithBase":              WithBase(nil),
		"WithAuth":              WithAuth(AuthStyle(99)),
		"WithMaxAttempts":       WithMaxAttempts(0),
		"WithMaxBodyBytes":      WithMaxBodyBytes(0),
		"WithClassifier":        WithClassifier(nil),
		"WithFirstTokenTimeout": WithFirstTokenTimeout(-1),
		"WithRetryBudget":       WithRetryBudget(math.NaN(), 1),
		"WithBackoff":           WithBackoff(nil),
	} {
		got := catchPanic(func() { NewTransport(p, opt) })
		err, ok := got.(error)
		if !ok || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s with a bad value: NewTransport panicked with %v, want an error wrapping ErrInvalidConfig that names the option", name, got)
		}
	}
}
