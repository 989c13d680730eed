package keypool

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
)

func newTestPool(t *testing.T, keys []Key, opts ...Option) (*Pool, *fakeClock) {
	t.Helper()
	c := newFakeClock()
	p, err := New(keys, append([]Option{withClock(c)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return p, c
}

// proveAll marks every key as having answered, as after a first success.
func proveAll(p *Pool) {
	for _, k := range p.snap.Load().keys {
		k.proven.Store(true)
	}
}

func mustAcquire(t *testing.T, p *Pool, r *acquireRequest) *lease {
	t.Helper()
	l, err := acquireFor(p, context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestWeightedShares(t *testing.T) {
	p, _ := newTestPool(t, []Key{
		{Secret: "sk-a", Weight: 1}, {Secret: "sk-b", Weight: 3}, {Secret: "sk-c", Weight: 6},
	})
	proveAll(p)
	counts := map[*keyState]int{}
	const n = 10000
	for range n {
		l := mustAcquire(t, p, &acquireRequest{})
		counts[l.key]++
		l.release()
	}
	for _, k := range p.snap.Load().keys {
		want := k.cfg.Weight / 10
		if got := float64(counts[k]) / n; math.Abs(got-want) > 0.01 {
			t.Errorf("%s: share %.3f, want %.3f", k.name, got, want)
		}
	}
}

func TestWeightsHoldWhenAKeyIsCooling(t *testing.T) {
	p, _ := newTestPool(t, []Key{
		{Secret: "sk-a", Weight: 1}, {Secret: "sk-b", Weight: 2}, {Secret: "sk-c", Weight: 10},
	})
	proveAll(p)
	keys := p.snap.Load().keys
	p.report(&lease{pool: p, key: keys[2]}, Outcome{Effect: EffectRateLimited, Wait: time.Hour}, 429)
	counts := map[*keyState]int{}
	for range 3000 {
		l := mustAcquire(t, p, &acquireRequest{})
		counts[l.key]++
		l.release()
	}
	if counts[keys[2]] != 0 {
		t.Fatalf("cooling key got %d requests", counts[keys[2]])
	}
	if r := float64(counts[keys[1]]) / float64(counts[keys[0]]); r < 1.8 || r > 2.2 {
		t.Errorf("b/a ratio %.2f, want about 2", r)
	}
}

func TestMaxConcurrentAndFIFOWaiting(t *testing.T) {
	p, _ := newTestPool(t, []Key{{Secret: "sk-a", MaxConcurrent: 2}})
	proveAll(p)
	l1 := mustAcquire(t, p, &acquireRequest{})
	l2 := mustAcquire(t, p, &acquireRequest{})

	// Three waiters queue in order; releases serve them in that order.
	order := make(chan int, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := mustAcquire(t, p, &acquireRequest{})
			order <- i
			l.release()
		}()
		waitFor(t, func() bool { return p.nwait.Load() == int64(i+1) })
	}
	if got := p.Stats()[0].InFlight; got != 2 {
		t.Fatalf("in flight %d, want 2", got)
	}
	l1.release()
	wg.Wait()
	close(order)
	want := 0
	for got := range order {
		if got != want {
			t.Errorf("waiter %d served in place %d", got, want)
		}
		want++
	}
	l2.release()
	if got := p.Stats()[0].InFlight; got != 0 {
		t.Errorf("in flight after all released: %d", got)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWaitEndsWithContext(t *testing.T) {
	p, _ := newTestPool(t, []Key{{Secret: "sk-a", MaxConcurrent: 1}})
	proveAll(p)
	l := mustAcquire(t, p, &acquireRequest{})
	defer l.release()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := acquireFor(p, ctx, &acquireRequest{})
		done <- err
	}()
	waitFor(t, func() bool { return p.nwait.Load() == 1 })
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want one wrapping context.Canceled", err)
	}
	var we *WaitError
	if !errors.As(err, &we) {
		t.Fatalf("err = %T, want *WaitError", err)
	}
	if p.nwait.Load() != 0 || p.waiters.Len() != 0 {
		t.Error("cancelled waiter left in the queue")
	}
}

func TestWaitEndsAtMaxWait(t *testing.T) {
	p, c := newTestPool(t, []Key{{Secret: "sk-a", MaxConcurrent: 1}}, WithMaxWait(3*time.Second))
	proveAll(p)
	l := mustAcquire(t, p, &acquireRequest{})
	defer l.release()
	done := make(chan error)
	go func() {
		_, err := acquireFor(p, context.Background(), &acquireRequest{})
		done <- err
	}()
	waitFor(t, func() bool { return p.nwait.Load() == 1 })
	c.Advance(2 * time.Second)
	select {
	case err := <-done:
		t.Fatalf("gave up early: %v", err)
	default:
	}
	c.Advance(time.Second)
	if err := <-done; !errors.Is(err, ErrWaitTimeout) {
		t.Fatalf("err = %v, want ErrWaitTimeout", err)
	}
}

func TestCooldownEndsAndWakesWaiter(t *testing.T) {
	p, c := newTestPool(t, []Key{{Secret: "sk-a"}})
	proveAll(p)
	k := p.snap.Load().keys[0]
	p.report(&lease{pool: p, key: k}, Outcome{Effect: EffectRateLimited, Wait: 5 * time.Second}, 429)
	st := p.Stats()[0]
	if st.State != StateCooling || !st.CooldownUntil.Equal(c.Now().Add(5*time.Second)) {
		t.Fatalf("after 429: %v until %v", st.State, st.CooldownUntil)
	}
	done := make(chan *lease)
	go func() { done <- mustAcquire(t, p, &acquireRequest{}) }()
	waitFor(t, func() bool { return p.nwait.Load() == 1 })
	c.Advance(4 * time.Second)
	select {
	case <-done:
		t.Fatal("served while cooling")
	default:
	}
	c.Advance(time.Second)
	(<-done).release()
}

func TestWaitFailsFastWhenNothingFreesInTime(t *testing.T) {
	p, _ := newTestPool(t, []Key{{Secret: "sk-a"}}, WithMaxWait(time.Second))
	proveAll(p)
	p.report(&lease{pool: p, key: p.snap.Load().keys[0]}, Outcome{Effect: EffectRateLimited, Wait: time.Minute}, 429)
	_, err := acquireFor(p, context.Background(), &acquireRequest{})
	var we *WaitError
	if !errors.As(err, &we) || !errors.Is(err, ErrWaitTimeout) {
		t.Fatalf("err = %v, want a *WaitError wrapping ErrWaitTimeout", err)
	}
	if we.Earliest.IsZero() {
		t.Error("WaitError does not say when the key frees up")
	}
}

func TestRepeated429sExtendCooldownUpToCap(t *testing.T) {
	p, c := newTestPool(t, []Key{{Secret: "sk-a"}}, WithCooldown(time.Second), WithMaxCooldown(5*time.Second))
	k := p.snap.Load().keys[0]
	want := []time.Duration{1, 2, 4, 5, 5}
	for i, w := range want {
		p.report(&lease{pool: p, key: k}, Outcome{Effect: EffectRateLimited}, 429)
		if got := p.Stats()[0].CooldownUntil.Sub(c.Now()); got != w*time.Second {
			t.Errorf("429 #%d: cooldown %v, want %v", i+1, got, w*time.Second)
		}
		c.Advance(w * time.Second)
	}
	p.report(&lease{pool: p, key: k}, Outcome{Effect: EffectOK}, 200)
	p.report(&lease{pool: p, key: k}, Outcome{Effect: EffectRateLimited}, 429)
	if got := p.Stats()[0].CooldownUntil.Sub(c.Now()); got != time.Second {
		t.Errorf("after a success the cooldown is %v, want it back to 1s", got)
	}
}

func TestUnprovenKeyTakesOneRequestAtATime(t *testing.T) {
	p, _ := newTestPool(t, []Key{{Secret: "sk-a"}, {Secret: "sk-b"}}, WithAdaptiveLimits(false))
	a := mustAcquire(t, p, &acquireRequest{})
	b := mustAcquire(t, p, &acquireRequest{})
	if a.key == b.key {
		t.Fatal("two requests on one unproven key")
	}
	// Both keys are probing: a third request waits.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := acquireFor(p, ctx, &acquireRequest{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third request: %v, want to wait", err)
	}
	p.report(&lease{pool: p, key: a.key}, Outcome{Effect: EffectOK}, 200)
	a.release()
	for range 5 { // a is proven now: no limit
		l := mustAcquire(t, p, &acquireRequest{tried: []*keyState{b.key}})
		if l.key != a.key {
			t.Fatal("got the probing key")
		}
		defer l.release()
	}
	b.release()
}

func TestDisableAndAccountExhaustion(t *testing.T) {
	p, _ := newTestPool(t, []Key{
		{Secret: "sk-a1", Account: "acme"}, {Secret: "sk-a2", Account: "acme"}, {Secret: "sk-b"},
	})
	proveAll(p)
	keys := p.snap.Load().keys
	p.report(&lease{pool: p, key: keys[0]}, Outcome{Effect: EffectAccountExhausted}, 402)
	st := p.Stats()
	if st[0].State != StateDisabled || st[1].State != StateDisabled || st[2].State == StateDisabled {
		t.Fatalf("states after 402: %v %v %v", st[0].State, st[1].State, st[2].State)
	}
	for range 10 {
		l := mustAcquire(t, p, &acquireRequest{})
		if l.key != keys[2] {
			t.Fatalf("request went to %s of the exhausted account", l.key.name)
		}
		l.release()
	}
	if err := p.Enable(keys[1].name); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st[0].State != StateProbing || st[1].State != StateProbing {
		t.Errorf("after Enable: %v %v, want probing", st[0].State, st[1].State)
	}
	if err := p.Disable("nope"); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("Disable(unknown) = %v", err)
	}
	if err := p.Disable(keys[2].name); err != nil {
		t.Fatal(err)
	}
	p.report(&lease{pool: p, key: keys[0]}, Outcome{Effect: EffectKeyRevoked}, 401)
	l := mustAcquire(t, p, &acquireRequest{})
	if l.key != keys[1] {
		t.Errorf("got %s, want the one key left", l.key.name)
	}
	l.release()
	// Nothing left: fail at once rather than wait for disabled keys.
	p.report(&lease{pool: p, key: keys[1]}, Outcome{Effect: EffectKeyRevoked}, 401)
	_, err := acquireFor(p, context.Background(), &acquireRequest{})
	if !errors.Is(err, ErrNoKeyAvailable) || !strings.Contains(err.Error(), "disabled or ejected") {
		t.Errorf("all disabled: %v", err)
	}
}

func TestEjectionAfterRepeatedFailures(t *testing.T) {
	p, c := newTestPool(t, []Key{{Secret: "sk-a"}}, WithEjection(3, 10*time.Second))
	proveAll(p)
	k := p.snap.Load().keys[0]
	for range 2 {
		p.report(&lease{pool: p, key: k}, Outcome{Effect: EffectFailure}, 503)
	}
	if p.Stats()[0].State != StateReady {
		t.Fatal("ejected too soon")
	}
	p.report(&lease{pool: p, key: k}, Outcome{Effect: EffectFailure}, 503)
	if st := p.Stats()[0]; st.State != StateEjected || st.Failures != 3 {
		t.Fatalf("after 3 failures: %v, %d failures", st.State, st.Failures)
	}
	c.Advance(10 * time.Second)
	if st := p.Stats()[0]; st.State != StateProbing {
		t.Fatalf("after ejection: %v, want probing", st.State)
	}
}

func TestModelFilter(t *testing.T) {
	p, _ := newTestPool(t, []Key{
		{Secret: "sk-a", Models: []string{"deepseek-chat"}}, {Secret: "sk-b", Models: []string{"gpt-4o"}},
	})
	proveAll(p)
	for range 20 {
		l := mustAcquire(t, p, &acquireRequest{model: "gpt-4o"})
		if l.key.name != p.snap.Load().keys[1].name {
			t.Fatal("model filter ignored")
		}
		l.release()
	}
	if _, err := acquireFor(p, context.Background(), &acquireRequest{model: "llama"}); !errors.Is(err, ErrNoKeyAvailable) {
		t.Errorf("unknown model: %v", err)
	}
}

func TestRPMWaitsForTokens(t *testing.T) {
	p, c := newTestPool(t, []Key{{Secret: "sk-a", RPM: 60}})
	proveAll(p)
	for range 60 {
		mustAcquire(t, p, &acquireRequest{}).release()
	}
	done := make(chan *lease)
	go func() { done <- mustAcquire(t, p, &acquireRequest{}) }()
	waitFor(t, func() bool { return p.nwait.Load() == 1 })
	c.Advance(500 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("61st request within a second")
	default:
	}
	c.Advance(500 * time.Millisecond)
	(<-done).release()
}
