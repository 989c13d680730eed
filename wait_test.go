package keypool

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestWaitForBusyKeyHonoursContext(t *testing.T) {
	release := make(chan struct{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer upstream.Close()
	defer close(release)
	tr, p, _ := newFakeClockTransport(t, []Key{{Secret: "sk-a", MaxConcurrent: 1}}, upstream.Client().Transport, nil)
	proveAll(p)
	go func() {
		resp, err := post(t, tr, upstream.URL, chatBody)
		if err == nil {
			readAll(t, resp)
		}
	}()
	waitFor(t, func() bool { return p.Stats()[0].InFlight == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, upstream.URL, strings.NewReader(chatBody))
	start := time.Now()
	_, err := tr.RoundTrip(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want one wrapping context.DeadlineExceeded", err)
	}
	if waited := time.Since(start); waited > 2*time.Second {
		t.Errorf("returned %v after the deadline", waited)
	}
}

func TestMaxConcurrentAndFIFOWaiting(t *testing.T) {
	p, _ := newFakeClockPool(t, []Key{{Secret: "sk-a", MaxConcurrent: 2}})
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

func TestWaitEndsWithContext(t *testing.T) {
	p, _ := newFakeClockPool(t, []Key{{Secret: "sk-a", MaxConcurrent: 1}})
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
	p, c := newFakeClockPool(t, []Key{{Secret: "sk-a", MaxConcurrent: 1}}, WithMaxWait(3*time.Second))
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
	p, c := newFakeClockPool(t, []Key{{Secret: "sk-a"}})
	proveAll(p)
	k := p.snap.Load().keys[0]
	p.report(&lease{pool: p, key: k}, Outcome{Effect: EffectRateLimited, Wait: 5 * time.Second}, answer(429))
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
	p, _ := newFakeClockPool(t, []Key{{Secret: "sk-a"}}, WithMaxWait(time.Second))
	proveAll(p)
	p.report(&lease{pool: p, key: p.snap.Load().keys[0]}, Outcome{Effect: EffectRateLimited, Wait: time.Minute}, answer(429))
	_, err := acquireFor(p, context.Background(), &acquireRequest{})
	var we *WaitError
	if !errors.As(err, &we) || !errors.Is(err, ErrWaitTimeout) {
		t.Fatalf("err = %v, want a *WaitError wrapping ErrWaitTimeout", err)
	}
	if we.Earliest.IsZero() {
		t.Error("WaitError does not say when the key frees up")
	}
}

// A waiter that leaves the queue lets the ones behind it through.
func TestLeavingWaiterLetsTheNextOneThrough(t *testing.T) {
	p, _ := newFakeClockPool(t, []Key{{Secret: "sk-a", TPM: 2000, MaxConcurrent: 10}})
	proveAll(p)
	held := mustAcquire(t, p, &acquireRequest{tokens: 1900}) // 100 tokens left
	defer held.release()

	bigCtx, cancelBig := context.WithCancel(context.Background())
	bigDone := make(chan error, 1)
	go func() {
		_, err := acquireFor(p, bigCtx, &acquireRequest{tokens: 1500})
		bigDone <- err
	}()
	waitFor(t, func() bool { return p.nwait.Load() == 1 })
	smallDone := make(chan *lease, 1)
	go func() {
		l, err := acquireFor(p, context.Background(), &acquireRequest{tokens: 50})
		if err != nil {
			t.Error(err)
		}
		smallDone <- l
	}()
	waitFor(t, func() bool { return p.nwait.Load() == 2 })
	cancelBig()
	if err := <-bigDone; !errors.Is(err, context.Canceled) {
		t.Errorf("big waiter: %v", err)
	}
	select {
	case l := <-smallDone:
		if l != nil {
			l.release()
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the small waiter was not served when the one ahead of it left")
	}
}

// A request whose own deadline comes before any key frees up fails at
// once, with an error that is both a timeout and the deadline's.
func TestDeadlineShortOfCooldownIsDeadlineExceeded(t *testing.T) {
	p, c := newFakeClockPool(t, []Key{{Secret: "sk-a"}}, WithAdaptiveLimits(false))
	c.mu.Lock()
	c.now = time.Now() // the context's deadline is on the real clock
	c.mu.Unlock()
	proveAll(p)
	l := mustAcquire(t, p, &acquireRequest{})
	p.report(l, Outcome{Effect: EffectRateLimited, Retry: RetryNow, Wait: time.Minute}, answer(429))
	l.release()
	tr := NewTransport(p, WithBase(roundTripFunc(func(*http.Request) (*http.Response, error) {
		return nil, errors.New("never reached")
	})))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://api.example/v1/chat/completions", strings.NewReader(chatBody))
	_, err := tr.RoundTrip(req)
	if !os.IsTimeout(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v: os.IsTimeout %v, errors.Is(context.DeadlineExceeded) %v; want both",
			err, os.IsTimeout(err), errors.Is(err, context.DeadlineExceeded))
	}
}

// queueBigThenSmall puts two waiters in p's queue, in this order: one
// for big tokens, with ctx, and one for small tokens behind it; between
// runs once the first is queued. It returns what each one's acquire
// returns.
func queueBigThenSmall(t *testing.T, p *Pool, ctx context.Context, big, small int, between func()) (bigDone chan error, smallDone chan *lease) {
	t.Helper()
	bigDone, smallDone = make(chan error, 1), make(chan *lease, 1)
	go func() {
		l, err := acquireFor(p, ctx, &acquireRequest{tokens: big})
		if l != nil {
			l.release()
		}
		bigDone <- err
	}()
	waitFor(t, func() bool { return p.nwait.Load() == 1 })
	between()
	go func() {
		l, err := acquireFor(p, context.Background(), &acquireRequest{tokens: small})
		if err != nil {
			t.Errorf("small waiter: %v", err)
		}
		smallDone <- l
	}()
	waitFor(t, func() bool { return p.nwait.Load() == 2 })
	return bigDone, smallDone
}

// holdBusyAndShort leaves p's two keys, "a" (TPM 2000) and "b"
// (MaxConcurrent 1), with a holding 100 tokens and b's only slot held.
// A request for 1500 tokens then waits for both, and is never failed
// early (b is only busy); one for 50 would fit a now.
func holdBusyAndShort(t *testing.T, p *Pool) {
	t.Helper()
	proveAll(p)
	// Two requests of 1900 tokens: whichever key the first takes, the
	// second takes the other.
	held := []*lease{mustAcquire(t, p, &acquireRequest{tokens: 1900}), mustAcquire(t, p, &acquireRequest{tokens: 1900})}
	t.Cleanup(func() {
		for _, l := range held {
			l.release()
		}
	})
	if st := p.Stats(); st[0].InFlight != 1 || st[1].InFlight != 1 {
		t.Fatalf("setup: in flight %d and %d, want 1 and 1", st[0].InFlight, st[1].InFlight)
	}
}

// A waiter that leaves the queue at its deadline, its context's or the
// pool's maximum wait, lets the smaller one behind it through at once,
// without waiting for any timer of the queue.
func TestWaiterLeavingAtItsDeadlineLetsTheNextOneThrough(t *testing.T) {
	keys := []Key{{Name: "a", Secret: "sk-a", TPM: 2000, MaxConcurrent: 10}, {Name: "b", Secret: "sk-b", MaxConcurrent: 1}}
	t.Run("WithMaxWait", func(t *testing.T) {
		p, c := newFakeClockPool(t, keys, WithMaxWait(10*time.Second), WithAdaptiveLimits(false))
		holdBusyAndShort(t, p)
		// The small one comes 5 s later: its own wait ends later.
		bigDone, smallDone := queueBigThenSmall(t, p, context.Background(), 1500, 50, func() { c.Advance(5 * time.Second) })
		c.Advance(5 * time.Second) // the big one's maximum wait ends; a still lacks its 1500 tokens
		if err := <-bigDone; !errors.Is(err, ErrWaitTimeout) {
			t.Fatalf("big waiter: %v, want ErrWaitTimeout", err)
		}
		if n := p.nwait.Load(); n != 0 {
			t.Fatalf("%d waiter(s) still queued after the one ahead left at its maximum wait, though key a could serve them", n)
		}
		(<-smallDone).release()
	})
	t.Run("context deadline", func(t *testing.T) {
		inVirtualTime(t, func(t *testing.T) {
			p := newRealClockPool(t, keys, WithAdaptiveLimits(false))
			holdBusyAndShort(t, p)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			bigDone, smallDone := queueBigThenSmall(t, p, ctx, 1500, 50, func() {})
			// Every goroutine now waits: virtual time runs on to the big
			// one's deadline. The queue's polls meanwhile serve no one:
			// the big one is first and does not fit.
			if err := <-bigDone; !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("big waiter: %v, want context.DeadlineExceeded", err)
			}
			if n := p.nwait.Load(); n != 0 {
				t.Fatalf("%d waiter(s) still queued after the one ahead left at its deadline, though key a could serve them", n)
			}
			(<-smallDone).release()
		})
	})
}
