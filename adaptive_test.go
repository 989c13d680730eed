package keypool

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/fakeupstream"
)

func TestAdaptiveLimitSlowStartDropAndProbe(t *testing.T) {
	c := newFakeClock()
	l := newAdaptiveLimit(0)
	for i := range 5 {
		l.succeeded(l.get(), c)
		if got := l.get(); got != int64(i+2) {
			t.Fatalf("slow start: limit %d after %d successes", got, i+1)
		}
	}
	l.succeeded(1, c) // not at the limit: no growth
	if l.get() != 6 {
		t.Fatalf("grew on a success that was not at the limit: %d", l.get())
	}
	for range 40 { // what the provider serves, with no refusal: evidence a 429 above it is a cap's
		l.succeeded(3, c)
	}
	if !l.overloaded(6, c.Now(), false) || l.get() != 5 {
		t.Fatalf("after an overload at 6 in flight: limit %d, want 5", l.get())
	}
	if st := l.state(); st.level != 6 || !st.nextProbe.Equal(c.Now()) {
		t.Fatalf("state %+v, want level 6 and a probe at once", st)
	}
	// The first probe comes at once; when it fails, the next waits.
	l.succeeded(5, c)
	if l.get() != 6 || !l.overloaded(6, c.Now(), false) {
		t.Fatalf("the first probe did not come at once: limit %d", l.get())
	}
	if st := l.state(); !st.nextProbe.Equal(c.Now().Add(probeFirstInterval)) {
		t.Fatalf("after a failed probe the next is due at %v, want in %v", st.nextProbe, probeFirstInterval)
	}
	// Just below the level that overloaded the limit waits for the probe.
	for range 1000 {
		l.succeeded(l.get(), c)
	}
	if l.get() != 5 {
		t.Fatalf("limit %d before the probe was due, want 5", l.get())
	}
	// Each probe that overloads again doubles the wait, up to the most.
	wait := probeFirstInterval
	for range 6 {
		c.Advance(wait)
		l.succeeded(l.get(), c)
		if l.get() != 6 {
			t.Fatalf("the probe was due but the limit is %d, want 6", l.get())
		}
		if !l.overloaded(6, c.Now(), false) || l.get() != 5 {
			t.Fatalf("a failed probe left the limit at %d, want 5", l.get())
		}
		wait = min(2*wait, probeMaxInterval)
		if got := l.state().nextProbe.Sub(c.Now()); got != wait {
			t.Fatalf("next probe in %v, want %v", got, wait)
		}
	}
	// A probe that succeeds shows the cap rose: the level is forgotten.
	c.Advance(wait)
	l.succeeded(5, c)
	for range probeConfirm {
		l.succeeded(6, c)
	}
	if st := l.state(); st.level != 0 {
		t.Fatalf("after a successful probe the level is still %d", st.level)
	}
	for range 100 {
		l.succeeded(l.get(), c)
	}
	if l.get() < 8 {
		t.Errorf("after the cap rose the limit reached only %d", l.get())
	}
	// A 429 at a level served a moment ago is not about concurrency.
	if l.overloaded(6, c.Now(), false) {
		t.Error("a 429 with 6 in flight, just after successes at 8, taken for a concurrency overload")
	}
	if l.overloaded(1, c.Now(), false) {
		t.Error("one request in flight taken for a concurrency overload")
	}
	capped := newAdaptiveLimit(10)
	if capped.get() != 10 {
		t.Fatalf("with MaxConcurrent 10 the limit starts at %d", capped.get())
	}
	for range 100 {
		capped.succeeded(capped.get(), c)
	}
	if capped.get() != 10 {
		t.Errorf("limit %d went past the ceiling", capped.get())
	}
}

// learning is five DeepSeek-like accounts in front of a pool that learns
// their in-flight caps, under load, in virtual time: every figure it
// measures is the same on any machine.
type learning struct {
	sim     *fakeupstream.Server
	secrets []string
	pool    *Pool
	client  *http.Client
}

// learningLatency is how long the simulated provider takes per answer.
const learningLatency = 20 * time.Millisecond

// newLearning starts the accounts with the given cap; told says whether
// the pool knows it (MaxConcurrent). edit may change the simulator's
// configuration (random 429s, say).
func newLearning(t *testing.T, cap int, told bool, edit func(*fakeupstream.Config)) *learning {
	t.Helper()
	l := &learning{}
	accounts := map[string]fakeupstream.Account{}
	var keys []Key
	for i := range 5 {
		s := fmt.Sprintf("sk-learn-%d-0123456789abcdef", i)
		l.secrets = append(l.secrets, s)
		accounts[s] = fakeupstream.Account{MaxInFlight: cap}
		k := Key{Secret: s}
		if told {
			k.MaxConcurrent = cap
		}
		keys = append(keys, k)
	}
	cfg := fakeupstream.Config{
		Mode: fakeupstream.DeepSeek, Accounts: accounts, Keys: simKeys(nil, l.secrets...),
		Latency: learningLatency, Jitter: time.Millisecond, Seed: 7,
	}
	if edit != nil {
		edit(&cfg)
	}
	l.sim = startInMemorySim(t, cfg)
	l.pool = newRealClockPool(t, keys) // the bubble's clock
	l.client = &http.Client{Transport: NewTransport(l.pool, WithBase(l.sim.Client().Transport))}
	return l
}

// capacity is what the accounts serve at most, in requests a second.
func (l *learning) capacity(cap int) float64 {
	return float64(len(l.secrets)*cap) / learningLatency.Seconds()
}

// send sends n requests from callers and returns how many the callers
// saw fail and how long it took.
func (l *learning) send(t *testing.T, callers, n int) (failed int64, took time.Duration) {
	t.Helper()
	start := time.Now()
	failed = runLoad(callers, n, func(int) error {
		return postChat(context.Background(), l.client, l.sim.URL, chatBody)
	})
	return failed, time.Since(start)
}

// setCap changes every account's cap, as a drained or topped-up balance
// does.
func (l *learning) setCap(cap int) {
	for _, s := range l.secrets {
		l.sim.SetAccount(s, fakeupstream.Account{MaxInFlight: cap})
	}
}

// limits returns the lowest and highest learned limit.
func (l *learning) limits() (lo, hi int) {
	lo = math.MaxInt
	for _, st := range l.pool.Stats() {
		lo, hi = min(lo, st.Limit), max(hi, st.Limit)
	}
	return lo, hi
}

// A cap the provider does not say is learned, and once learned costs
// few 429s: probes back off while the cap holds.
func TestLearnedLimitSteadyState(t *testing.T) {
	t.Parallel() // seconds of CPU: let it share the machine with the others
	inVirtualTime(t, testLearnedLimitSteadyState)
}

func testLearnedLimitSteadyState(t *testing.T) {
	const cap, requests = 4, 30000
	l := newLearning(t, cap, false, nil)
	failed, took := l.send(t, 40, requests)
	rateLimited := l.sim.Total().RateLimited
	goodput := float64(requests) / took.Seconds() / l.capacity(cap)
	lo, hi := l.limits()
	t.Logf("%d requests in %v: %d upstream 429s (%.2f%%), goodput %.1f%% of capacity, learned limits %d..%d",
		requests, took, rateLimited, 100*float64(rateLimited)/requests, 100*goodput, lo, hi)
	for _, st := range l.pool.Stats() {
		if st.OverloadLevel != cap+1 || st.NextProbe.IsZero() {
			t.Errorf("%s: Stats says it overloaded at %d, next probe at %v; want %d and a time", st.Name, st.OverloadLevel, st.NextProbe, cap+1)
		}
	}
	if failed != 0 {
		t.Errorf("%d caller errors", failed)
	}
	if float64(rateLimited) > 0.003*requests {
		t.Errorf("%d upstream 429s, more than 0.3%% of %d requests", rateLimited, requests)
	}
	if goodput < 0.95 {
		t.Errorf("goodput %.1f%% of capacity, want at least 95%%", 100*goodput)
	}
	for i, s := range l.secrets {
		if got := l.sim.MaxInFlight(s); got > cap {
			t.Errorf("account %d saw %d in flight", i, got)
		}
	}
}

// A cap that rises is found within the longest probe interval and a few
// successes: the README's bound.
func TestLearnedLimitFindsARaisedCap(t *testing.T) {
	t.Parallel() // seconds of CPU: let it share the machine with the others
	inVirtualTime(t, testLearnedLimitFindsARaisedCap)
}

func testLearnedLimitFindsARaisedCap(t *testing.T) {
	l := newLearning(t, 4, false, nil)
	if failed, _ := l.send(t, 40, 8000); failed != 0 { // 8 s: settled, probes are rare by now
		t.Fatalf("%d caller errors while learning", failed)
	}
	if lo, hi := l.limits(); lo != 4 || hi != 4 {
		t.Fatalf("settled at %d..%d, want 4", lo, hi)
	}
	l.setCap(8)
	raised := time.Now()
	var reached time.Duration
	failed := runLoad(40, 1<<30, func(int) error {
		if lo, _ := l.limits(); lo >= 7 {
			reached = time.Since(raised)
			return errStopLoad
		}
		if time.Since(raised) > time.Minute {
			return errStopLoad
		}
		return postChat(context.Background(), l.client, l.sim.URL, chatBody)
	})
	t.Logf("cap raised from 4 to 8: every learned limit at 7 or more after %v", reached)
	if failed != 0 {
		t.Errorf("%d caller errors", failed)
	}
	if reached == 0 || reached > 10*time.Second {
		t.Errorf("learned limits reached 7 after %v, want within 10s", reached)
	}
}

// A cap that drops (a draining balance) is followed down at once, and
// back up when it rises again, with no caller ever seeing an error.
func TestLearnedLimitFollowsADrainingBalance(t *testing.T) {
	t.Parallel()
	inVirtualTime(t, testLearnedLimitFollowsADrainingBalance)
}

func testLearnedLimitFollowsADrainingBalance(t *testing.T) {
	l := newLearning(t, 8, false, nil)
	phase := func(name string, requests int, wantLo, wantHi int) {
		t.Helper()
		failed, took := l.send(t, 60, requests)
		lo, hi := l.limits()
		t.Logf("%s: %d requests in %v, learned limits %d..%d, %d upstream 429s so far", name, requests, took, lo, hi, l.sim.Total().RateLimited)
		if failed != 0 {
			t.Errorf("%s: %d caller errors", name, failed)
		}
		if lo < wantLo || hi > wantHi {
			t.Errorf("%s: learned limits %d..%d, want %d..%d", name, lo, hi, wantLo, wantHi)
		}
	}
	// A count taken as a request is sent may be one too high (the
	// provider frees a slot before keypool has read its answer), so a
	// learned limit may stand one above the cap.
	phase("cap 8", 6000, 7, 9)
	l.setCap(2)
	phase("cap 2 (balance drained)", 2000, 1, 3)
	l.setCap(8)
	phase("cap 8 again (topped up)", 12000, 7, 9)
}

// 429s the provider sends at random, whatever the load, are not taken
// for a cap: the learned limit holds, the account goes on, and goodput
// stays close to that of the same run without them.
func TestRandom429sAreNotACap(t *testing.T) {
	t.Parallel()
	const cap, requests = 8, 6000
	for _, told := range []bool{false, true} {
		var clean float64
		for _, rate := range []float64{0, 0.05, 0.20} {
			t.Run(fmt.Sprintf("told=%v,rate=%v", told, rate), func(t *testing.T) {
				inVirtualTime(t, func(t *testing.T) {
					l := newLearning(t, cap, told, func(c *fakeupstream.Config) { c.RateLimitRate = rate })
					failed, took := l.send(t, 60, requests)
					goodput := float64(requests) / took.Seconds()
					if rate == 0 {
						clean = goodput
					}
					lo, hi := l.limits()
					t.Logf("%.0f%% random 429s: %d 429s, goodput %.0f req/s (%.1f%% of the clean run), learned limits %d..%d",
						100*rate, l.sim.Total().RateLimited, goodput, 100*goodput/clean, lo, hi)
					if failed != 0 {
						t.Errorf("%d caller errors", failed)
					}
					if lo < 4 {
						t.Errorf("learned limits fell to %d", lo)
					}
					if want := map[float64]float64{0: 0, 0.05: 0.90, 0.20: 0.70}[rate]; goodput < want*clean {
						t.Errorf("goodput %.1f%% of the clean run, want at least %.0f%%", 100*goodput/clean, 100*want)
					}
				})
			})
		}
	}
}

func TestOpenAILimitsKeptBeforeA429(t *testing.T) { inVirtualTime(t, testOpenAILimitsKeptBeforeA429) }

func testOpenAILimitsKeptBeforeA429(t *testing.T) {
	const rpm, tpm = 200, 8000
	accounts := map[string]fakeupstream.Account{}
	var secrets []string
	keys := []Key{}
	for i := range 3 {
		s := fmt.Sprintf("sk-oai-%d-0123456789abcdef", i)
		secrets = append(secrets, s)
		accounts[s] = fakeupstream.Account{RPM: rpm, TPM: tpm}
		keys = append(keys, Key{Secret: s, RPM: rpm, TPM: tpm})
	}
	sim := fakeupstream.NewInMemory(fakeupstream.Config{
		Mode: fakeupstream.OpenAI, Accounts: accounts, Keys: simKeys(nil, secrets...), Latency: 2 * time.Millisecond,
	})
	t.Cleanup(sim.Close)
	p, err := New(keys)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: NewTransport(p, WithBase(sim.Client().Transport))}
	// Each request is about 22 prompt tokens and reserves its 200
	// max_tokens but uses 16. Without settling from usage the TPM buckets
	// would run dry long before RPM does; with it, both bind.
	body := `{"model":"gpt-4o-mini","max_tokens":200,"messages":[{"role":"user","content":"hi"}]}`
	const requests = 650 // more than the buckets hold (600 requests, 24,000 tokens): the run waits for refills
	failed := runLoad(20, requests, func(int) error { return postChat(context.Background(), client, sim.URL, body) })
	total := sim.Total()
	t.Logf("OpenAI mode, 3 keys x %d RPM / %d TPM, %d requests: %d upstream 429s (%.2f%%), %d caller failures",
		rpm, tpm, requests, total.RateLimited, 100*float64(total.RateLimited)/requests, failed)
	if failed != 0 {
		t.Errorf("%d caller failures", failed)
	}
	if float64(total.RateLimited) > 0.01*requests {
		t.Errorf("%d upstream 429s, want at most 1%% of %d", total.RateLimited, requests)
	}
	for i, st := range p.Stats() {
		c := sim.Counters(secrets[i])
		billed := int64(c.PromptTokens + c.CompletionTokens)
		if diff := st.Tokens - billed; diff < -billed/20 || diff > billed/20 {
			t.Errorf("%s: Stats says %d tokens, the upstream billed %d", st.Name, st.Tokens, billed)
		}
	}
}

// MaxConcurrent: math.MaxInt with adaptive limits on reports a positive
// limit.
func TestHugeMaxConcurrent(t *testing.T) {
	p, _ := newFakeClockPool(t, []Key{{Secret: "sk-a", MaxConcurrent: math.MaxInt}})
	if got := p.Stats()[0].Limit; got <= 0 {
		t.Errorf("Stats().Limit = %d for MaxConcurrent %d", got, math.MaxInt)
	}
}

// A key told a high cap that gets a 429 on every third request, whatever
// the load, keeps its limit and its share of the traffic: its weight's
// third of the picks, less the refusals the other key serves.
func TestFrequent429sDoNotCollapseALimit(t *testing.T) {
	inVirtualTime(t, func(t *testing.T) {
		var mu sync.Mutex
		seen := map[string]int{}
		base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.Body != nil {
				io.Copy(io.Discard, r.Body)
				r.Body.Close()
			}
			key := r.Header.Get("Authorization")
			mu.Lock()
			seen[key]++
			n := seen[key]
			mu.Unlock()
			if key == "Bearer sk-flaky-0123456789abcdef" && n%3 == 0 {
				return &http.Response{StatusCode: 429, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(`{}`)), Request: r}, nil
			}
			time.Sleep(learningLatency)
			return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
				Body: io.NopCloser(strings.NewReader(`{"ok":true}`)), Request: r}, nil
		})
		p := newRealClockPool(t, []Key{
			{Secret: "sk-flaky-0123456789abcdef", MaxConcurrent: 500, Weight: 1},
			{Secret: "sk-sound-0123456789abcdef", MaxConcurrent: 500, Weight: 2},
		})
		client := &http.Client{Transport: NewTransport(p, WithBase(base))}
		if failed := runLoad(20, 3000, func(int) error {
			return postChat(context.Background(), client, "http://api.example", chatBody)
		}); failed != 0 {
			t.Errorf("%d caller errors", failed)
		}
		st := p.Stats()
		share := float64(st[0].Successes) / float64(st[0].Successes+st[1].Successes)
		t.Logf("the flaky key: limit %d, %d successes of %d (%.0f%%), %d 429s", st[0].Limit, st[0].Successes, st[0].Successes+st[1].Successes, 100*share, st[0].RateLimited)
		if st[0].Limit < 4 {
			t.Errorf("the flaky key's limit fell to %d", st[0].Limit)
		}
		// A third of the picks, of which a third are refused and served
		// by the other key: about 22%.
		if share < 0.18 {
			t.Errorf("the flaky key served %.0f%% of the requests, want about 22%%", 100*share)
		}
	})
}
