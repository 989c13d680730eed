package keypool

import (
	"errors"
	"testing"
)

func TestNewRejectsBadOptions(t *testing.T) {
	for _, opt := range []Option{WithMaxWait(0), WithCooldown(-1), WithMaxCooldown(0), WithDisableFor(0), WithEjection(0, 1), WithEjection(1, 0)} {
		if _, err := New([]Key{{Secret: "sk-a"}}, opt); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("bad option accepted: %v", err)
		}
	}
}
