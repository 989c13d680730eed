package keypool

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/keypool/keypool/internal/fakeupstream"
)

func TestRevokedKeyCostsOneRequestAndFailsOver(t *testing.T) {
	inVirtualTime(t, testRevokedKeyCostsOneRequestAndFailsOver)
}

func testRevokedKeyCostsOneRequestAndFailsOver(t *testing.T) {
	sim := startInMemorySim(t, fakeupstream.Config{
		Keys:    simKeys(map[string]fakeupstream.Fault{"sk-bad": fakeupstream.FaultRevoked}, "sk-bad", "sk-good1", "sk-good2"),
		Latency: 2 * time.Millisecond,
	})
	tr, p, _ := newFakeClockTransport(t, keysOf("sk-bad", "sk-good1", "sk-good2"), sim.Client().Transport, nil)
	client := &http.Client{Transport: tr}
	if failed := runLoad(40, 40, func(int) error { return postChat(context.Background(), client, sim.URL, chatBody) }); failed != 0 {
		t.Errorf("%d requests failed", failed)
	}
	if got := sim.Counters("sk-bad").Requests; got != 1 {
		t.Errorf("revoked key got %d requests upstream, want 1", got)
	}
	if st := p.Stats()[0]; st.State != StateDisabled || st.Failures != 1 {
		t.Errorf("revoked key: %v, %d failures", st.State, st.Failures)
	}
}

func TestPaymentAndQuotaDisableTheAccount(t *testing.T) {
	inVirtualTime(t, testPaymentAndQuotaDisableTheAccount)
}

func testPaymentAndQuotaDisableTheAccount(t *testing.T) {
	for _, fault := range []fakeupstream.Fault{fakeupstream.FaultNoBalance, fakeupstream.FaultQuota} {
		sim := startInMemorySim(t, fakeupstream.Config{Keys: map[string]fakeupstream.Key{
			"sk-a1": {Account: "acme", Fault: fault}, "sk-a2": {Account: "acme"}, "sk-b": {},
		}})
		keys := []Key{{Secret: "sk-a1", Account: "acme", Weight: 100}, {Secret: "sk-a2", Account: "acme"}, {Secret: "sk-b"}}
		tr, p, _ := newFakeClockTransport(t, keys, sim.Client().Transport, nil)
		for range 10 {
			resp, err := post(t, tr, sim.URL, chatBody)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("fault %d: %v %v", fault, resp, err)
			}
			readAll(t, resp)
		}
		st := p.Stats()
		if st[0].State != StateDisabled || st[1].State != StateDisabled {
			t.Errorf("fault %d: account keys %v %v, want disabled", fault, st[0].State, st[1].State)
		}
		if sim.Counters("sk-a2").Requests != 0 || sim.Counters("sk-b").OK != 10 {
			t.Errorf("fault %d: a2 got %d, b got %d", fault, sim.Counters("sk-a2").Requests, sim.Counters("sk-b").OK)
		}
	}
}

func TestRateLimitCoolsDownForTheAskedTime(t *testing.T) {
	date := func(c *fakeClock, d time.Duration) string { return c.Now().Add(d).UTC().Format(http.TimeFormat) }
	tests := []struct {
		name   string
		header func(c *fakeClock) []string
		want   time.Duration
	}{
		{"retry-after seconds", func(*fakeClock) []string { return []string{"Retry-After", "7"} }, 7 * time.Second},
		{"retry-after date", func(c *fakeClock) []string { return []string{"Retry-After", date(c, 9*time.Second)} }, 9 * time.Second},
		{"retry-after-ms", func(*fakeClock) []string { return []string{"Retry-After-Ms", "1500", "Retry-After", "9"} }, 1500 * time.Millisecond},
		{"x-ratelimit-reset", func(*fakeClock) []string {
			return []string{"X-Ratelimit-Remaining-Requests", "0", "X-Ratelimit-Reset-Requests", "1m30s", "X-Ratelimit-Reset-Tokens", "2s"}
		}, 90 * time.Second},
		{"nothing said", func(*fakeClock) []string { return nil }, time.Second},
		{"capped", func(*fakeClock) []string { return []string{"Retry-After", "86400"} }, 2 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &scripted{script: map[string][]func(http.ResponseWriter){}}
			upstream := httptest.NewServer(s)
			defer upstream.Close()
			// Not learning limits: a bare 429 cools the account down too.
			tr, p, c := newFakeClockTransport(t, keysOf("sk-a", "sk-b"), upstream.Client().Transport, []Option{WithMaxWait(time.Hour), WithAdaptiveLimits(false)})
			proveAll(p)
			s.script["sk-a"] = []func(http.ResponseWriter){status(429, `{"error":{"type":"requests","code":"rate_limit_exceeded"}}`, tt.header(c)...)}
			s.script["sk-b"] = []func(http.ResponseWriter){status(429, `{}`, tt.header(c)...)}
			start := c.Now()
			// Both keys 429 once; the request then waits for the first
			// cooldown to end, which the fake clock brings about.
			done := make(chan *http.Response)
			go func() {
				resp, err := post(t, tr, upstream.URL, chatBody)
				if err != nil {
					t.Error(err)
				}
				done <- resp
			}()
			waitFor(t, func() bool { return p.nwait.Load() == 1 })
			st := p.Stats()
			for _, k := range st {
				if k.State != StateCooling || k.CooldownUntil.Sub(start) != tt.want {
					t.Errorf("%s: %v until +%v, want cooling until +%v", k.Name, k.State, k.CooldownUntil.Sub(start), tt.want)
				}
			}
			c.Advance(tt.want)
			resp := <-done
			if resp.StatusCode != 200 {
				t.Errorf("final status %d", resp.StatusCode)
			}
			readAll(t, resp)
			if st := p.Stats(); st[0].RateLimited+st[1].RateLimited != 2 {
				t.Errorf("429s counted: %d %d", st[0].RateLimited, st[1].RateLimited)
			}
		})
	}
}

func TestServerErrorsBackOffPreferAnotherKeyAndEject(t *testing.T) {
	s := &scripted{script: map[string][]func(http.ResponseWriter){}}
	upstream := httptest.NewServer(s)
	defer upstream.Close()
	var slept atomic.Int32
	tr, p, _ := newFakeClockTransport(t, keysOf("sk-a", "sk-b"), upstream.Client().Transport,
		[]Option{WithEjection(2, time.Minute), WithMaxWait(10 * time.Second)},
		WithBackoff(func() backoff.BackOff { slept.Add(1); return &backoff.ZeroBackOff{} }))
	proveAll(p)
	for range 3 {
		s.script["sk-a"] = append(s.script["sk-a"], status(503, `{"error":{"message":"overloaded"}}`))
		s.script["sk-b"] = append(s.script["sk-b"], status(529, `overloaded`))
	}
	resp, err := post(t, tr, upstream.URL, chatBody)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	// Attempts alternate between keys: a, b, a, b -> both ejected after two
	// failures each; the fifth attempt has no key left within the wait.
	if len(s.seen) < 2 || s.seen[0] == s.seen[1] {
		t.Errorf("retry did not prefer another key: %v", s.seen)
	}
	if slept.Load() != 1 {
		t.Errorf("backoff made %d times, want once per request", slept.Load())
	}
	st := p.Stats()
	if st[0].State != StateEjected || st[1].State != StateEjected {
		t.Errorf("states %v %v, want both ejected", st[0].State, st[1].State)
	}
	if resp.StatusCode != 503 && resp.StatusCode != 529 {
		t.Errorf("caller got %d, want the upstream's last error", resp.StatusCode)
	}
}

func TestRepeated429sExtendCooldownUpToCap(t *testing.T) {
	p, c := newFakeClockPool(t, []Key{{Secret: "sk-a"}}, WithCooldown(time.Second), WithMaxCooldown(5*time.Second), WithAdaptiveLimits(false))
	k := p.snap.Load().keys[0]
	want := []time.Duration{1, 2, 4, 5, 5}
	for i, w := range want {
		p.report(&lease{pool: p, key: k}, Outcome{Effect: EffectRateLimited}, answer(429))
		if got := p.Stats()[0].CooldownUntil.Sub(c.Now()); got != w*time.Second {
			t.Errorf("429 #%d: cooldown %v, want %v", i+1, got, w*time.Second)
		}
		c.Advance(w * time.Second)
	}
	p.report(&lease{pool: p, key: k}, Outcome{Effect: EffectOK}, answer(200))
	p.report(&lease{pool: p, key: k}, Outcome{Effect: EffectRateLimited}, answer(429))
	if got := p.Stats()[0].CooldownUntil.Sub(c.Now()); got != time.Second {
		t.Errorf("after a success the cooldown is %v, want it back to 1s", got)
	}
}

func TestUnprovenKeyTakesOneRequestAtATime(t *testing.T) {
	p, _ := newFakeClockPool(t, []Key{{Secret: "sk-a"}, {Secret: "sk-b"}}, WithAdaptiveLimits(false))
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
	p.report(&lease{pool: p, key: a.key}, Outcome{Effect: EffectOK}, answer(200))
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
	p, _ := newFakeClockPool(t, []Key{
		{Secret: "sk-a1", Account: "acme"}, {Secret: "sk-a2", Account: "acme"}, {Secret: "sk-b"},
	})
	proveAll(p)
	keys := p.snap.Load().keys
	p.report(&lease{pool: p, key: keys[0]}, Outcome{Effect: EffectAccountExhausted}, answer(402))
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
	p.report(&lease{pool: p, key: keys[0]}, Outcome{Effect: EffectKeyRevoked}, answer(401))
	l := mustAcquire(t, p, &acquireRequest{})
	if l.key != keys[1] {
		t.Errorf("got %s, want the one key left", l.key.name)
	}
	l.release()
	// Nothing left: fail at once rather than wait for disabled keys.
	p.report(&lease{pool: p, key: keys[1]}, Outcome{Effect: EffectKeyRevoked}, answer(401))
	_, err := acquireFor(p, context.Background(), &acquireRequest{})
	if !errors.Is(err, ErrNoKeyAvailable) || !strings.Contains(err.Error(), "disabled or ejected") {
		t.Errorf("all disabled: %v", err)
	}
}

func TestEjectionAfterRepeatedFailures(t *testing.T) {
	p, c := newFakeClockPool(t, []Key{{Secret: "sk-a"}}, WithEjection(3, 10*time.Second))
	proveAll(p)
	k := p.snap.Load().keys[0]
	for range 2 {
		p.report(&lease{pool: p, key: k}, Outcome{Effect: EffectFailure}, answer(503))
	}
	if p.Stats()[0].State != StateReady {
		t.Fatal("ejected too soon")
	}
	p.report(&lease{pool: p, key: k}, Outcome{Effect: EffectFailure}, answer(503))
	if st := p.Stats()[0]; st.State != StateEjected || st.Failures != 3 {
		t.Fatalf("after 3 failures: %v, %d failures", st.State, st.Failures)
	}
	c.Advance(10 * time.Second)
	if st := p.Stats()[0]; st.State != StateProbing {
		t.Fatalf("after ejection: %v, want probing", st.State)
	}
}

func TestHeadersResyncTheBuckets(t *testing.T) {
	p, c := newFakeClockPool(t, []Key{{Secret: "sk-a", RPM: 600, TPM: 60000}})
	proveAll(p)
	k := p.snap.Load().keys[0]
	h := http.Header{}
	h.Set("X-Ratelimit-Remaining-Requests", "0")
	h.Set("X-Ratelimit-Remaining-Tokens", "10")
	resyncFromHeaders(&http.Response{Header: h}, k, c)
	if n, at, _ := k.tryTake(c.Now(), 1); n != 0 || at == 0 {
		t.Fatal("took a request the provider said had no budget left")
	}
	c.Advance(100 * time.Millisecond) // 1 request token back, 100 tokens back
	if n, _, _ := k.tryTake(c.Now(), 50); n == 0 {
		t.Fatal("bucket did not refill after resync")
	}
}

// Anthropic's rate-limit headers resync the buckets as OpenAI's do.
func TestAnthropicHeadersResyncTheBuckets(t *testing.T) {
	p, c := newFakeClockPool(t, []Key{{Secret: "sk-ant", RPM: 600}})
	proveAll(p)
	k := p.snap.Load().keys[0]
	h := http.Header{}
	h.Set("Anthropic-Ratelimit-Requests-Remaining", "0")
	resyncFromHeaders(&http.Response{Header: h}, k, c)
	if n, at, _ := k.tryTake(c.Now(), 1); n != 0 || at == 0 {
		t.Fatal("took a request Anthropic said had no budget left")
	}
}

// Durations too large to add to the clock mean "as long as possible",
// never a time in the past.
func TestHugeDurationsSaturate(t *testing.T) {
	forever := time.Duration(math.MaxInt64)

	t.Run("WithDisableFor", func(t *testing.T) {
		p, c := newFakeClockPool(t, keysOf("sk-a", "sk-b"), WithDisableFor(forever))
		proveAll(p)
		l := mustAcquire(t, p, &acquireRequest{})
		p.report(l, Outcome{Effect: EffectKeyRevoked, Retry: RetryNow}, answer(401))
		l.release()
		c.Advance(1000 * time.Hour)
		for _, st := range p.Stats() {
			if st.Name == l.key.name && st.State != StateDisabled {
				t.Errorf("revoked key is %v after WithDisableFor(max)", st.State)
			}
		}
	})

	t.Run("WithEjection", func(t *testing.T) {
		p, c := newFakeClockPool(t, keysOf("sk-a", "sk-b"), WithEjection(1, forever))
		proveAll(p)
		l := mustAcquire(t, p, &acquireRequest{})
		p.report(l, Outcome{Effect: EffectFailure, Retry: RetryBackoff}, answer(500))
		l.release()
		c.Advance(1000 * time.Hour)
		for _, st := range p.Stats() {
			if st.Name == l.key.name && st.State != StateEjected {
				t.Errorf("failing key is %v after WithEjection(1, max)", st.State)
			}
		}
	})

	t.Run("WithCooldown doubled", func(t *testing.T) {
		p, c := newFakeClockPool(t, keysOf("sk-a"), WithCooldown(forever/4), WithMaxCooldown(forever), WithAdaptiveLimits(false))
		proveAll(p)
		l := mustAcquire(t, p, &acquireRequest{})
		defer l.release()
		for i := range 40 {
			p.report(l, Outcome{Effect: EffectRateLimited, Retry: RetryNow}, answer(429))
			if st := p.Stats()[0]; st.State != StateCooling || !st.CooldownUntil.After(c.Now()) {
				t.Fatalf("after 429 #%d: %v until %v", i+1, st.State, st.CooldownUntil)
			}
		}
	})

	t.Run("WithMaxWait", func(t *testing.T) {
		s := &scripted{script: map[string][]func(http.ResponseWriter){
			"sk-a": {status(429, `{}`, "Retry-After", "1")},
		}}
		upstream := httptest.NewServer(s)
		defer upstream.Close()
		tr, p, c := newFakeClockTransport(t, keysOf("sk-a"), upstream.Client().Transport, []Option{WithMaxWait(forever)})
		proveAll(p)
		done := make(chan *http.Response, 1)
		go func() {
			resp, err := post(t, tr, upstream.URL, chatBody)
			if err != nil {
				t.Error(err)
			}
			done <- resp
		}()
		waitFor(t, func() bool { return len(s.seenCopy()) == 1 && p.nwait.Load() == 1 })
		c.Advance(time.Second)
		resp := <-done
		if resp == nil || resp.StatusCode != 200 {
			t.Fatalf("got %v, want the 200 after waiting out Retry-After", resp)
		}
		readAll(t, resp)
	})
}

// Enable puts a key back on probation: one request at a time until one
// succeeds, as the docs say.
func TestEnableProbes(t *testing.T) {
	p, _ := newFakeClockPool(t, keysOf("sk-a"))
	proveAll(p)
	name := p.Stats()[0].Name
	p.Disable(name)
	p.Enable(name)
	if st := p.Stats()[0].State; st != StateProbing {
		t.Errorf("state after Disable and Enable is %v, want probing", st)
	}
	l := mustAcquire(t, p, &acquireRequest{})
	defer l.release()
	if k, _, _ := p.pick(&acquireRequest{}); k != nil {
		t.Error("a probing key took a second request")
	}
}

// With learned limits, a bare 429 that concurrency does not explain (the
// account served as many at once lately) neither lowers the limit nor
// stops the account; pauseAfter of them in a row pause it for an eighth
// of the cooldown, and each one more doubles the pause.
func TestUnexplainedBare429sPauseOnlyAfterARun(t *testing.T) {
	p, c := newFakeClockPool(t, []Key{{Secret: "sk-only-0123456789", MaxConcurrent: 8}}, WithCooldown(8*time.Second))
	proveAll(p)
	one := func(status int) {
		t.Helper()
		l := mustAcquire(t, p, &acquireRequest{})
		o := Outcome{Effect: EffectOK}
		if status == 429 {
			o = Outcome{Effect: EffectRateLimited, Retry: RetryNow}
		}
		p.report(l, o, answer(status))
		l.release()
	}
	for range 4 { // one at a time: the account serves 1 in flight
		one(200)
	}
	limit := p.Stats()[0].Limit
	for i := 1; i < pauseAfter; i++ {
		one(429)
		if st := p.Stats()[0]; st.State == StateCooling || st.Limit != limit {
			t.Fatalf("after %d unexplained 429s: %v, limit %d (was %d); want neither a pause nor a lower limit", i, st.State, st.Limit, limit)
		}
	}
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		one(429)
		st := p.Stats()[0]
		if st.State != StateCooling || st.CooldownUntil.Sub(c.Now()) != want {
			t.Fatalf("429 #%d in a row: %v until %v from now; want cooling for %v", pauseAfter+i, st.State, st.CooldownUntil.Sub(c.Now()), want)
		}
		c.Advance(want)
	}
}

// Disabling the key a waiter at the head of the queue needed runs the
// queue again at once, as removing it does: the waiter behind, which
// another key can serve, is served.
func TestDisableLetsWaitersThrough(t *testing.T) {
	p, bigDone, smallDone := queueBehindKeyA(t)
	if err := p.Disable("a"); err != nil {
		t.Fatal(err)
	}
	if n := p.nwait.Load(); n != 0 {
		t.Fatalf("%d waiter(s) still queued after the key the first one needed was disabled; key b can serve the second now", n)
	}
	if err := <-bigDone; !errors.Is(err, ErrWaitTimeout) {
		t.Errorf("big waiter: %v, want ErrWaitTimeout (b frees up too late)", err)
	}
	(<-smallDone).release()
}
