package keypool

import (
	"context"
	"errors"
	"testing"
	"time"
)

// An ejected key takes one probe a cooldown; a probe that fails waits for
// the next, and the first that gets an answer puts the key back long
// before its ejection would end.
func TestEjectedKeyIsProbedEveryCooldown(t *testing.T) {
	p, c := newFakeClockPool(t, []Key{{Secret: "sk-a"}}, WithEjection(1, time.Minute), WithCooldown(time.Second))
	proveAll(p)
	fail := func(l *lease) {
		p.report(l, Outcome{Effect: EffectFailure}, answer(503))
		l.release()
	}
	fail(mustAcquire(t, p, &acquireRequest{}))
	st := p.Stats()[0]
	if st.State != StateEjected || !st.DisabledUntil.Equal(c.Now().Add(time.Second)) {
		t.Fatalf("after a failure: %v until %v, want ejected until the probe a second later", st.State, st.DisabledUntil)
	}
	if _, err := acquireFor(p, context.Background(), &acquireRequest{}); !errors.Is(err, ErrNoKeyAvailable) {
		t.Fatalf("ejected key taken before its probe: %v", err)
	}

	c.Advance(time.Second)
	probe := mustAcquire(t, p, &acquireRequest{})
	if _, err := acquireFor(p, context.Background(), &acquireRequest{}); !errors.Is(err, ErrNoKeyAvailable) {
		t.Fatalf("a second request joined the probe: %v", err)
	}
	fail(probe)
	if _, err := acquireFor(p, context.Background(), &acquireRequest{}); !errors.Is(err, ErrNoKeyAvailable) {
		t.Fatalf("probed again at once after a failed probe: %v", err)
	}

	c.Advance(time.Second)
	probe = mustAcquire(t, p, &acquireRequest{})
	p.report(probe, Outcome{Effect: EffectOK}, answer(200))
	probe.release()
	if st := p.Stats()[0]; st.State != StateReady {
		t.Fatalf("after a probe that succeeded: %v, want ready", st.State)
	}
	mustAcquire(t, p, &acquireRequest{}).release()
}

// An ejected key whose account is disabled too is not probed: the
// disablement is the longer wait.
func TestDisabledKeyIsNotProbed(t *testing.T) {
	p, c := newFakeClockPool(t, []Key{{Secret: "sk-a"}}, WithEjection(1, time.Minute), WithCooldown(time.Second), WithDisableFor(time.Hour))
	proveAll(p)
	l := mustAcquire(t, p, &acquireRequest{})
	p.report(l, Outcome{Effect: EffectFailure}, answer(503))
	p.report(l, Outcome{Effect: EffectAccountExhausted}, answer(402))
	l.release()
	c.Advance(2 * time.Second)
	if _, err := acquireFor(p, context.Background(), &acquireRequest{}); !errors.Is(err, ErrNoKeyAvailable) {
		t.Fatalf("a disabled key was probed: %v", err)
	}
}
