package keypool

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/fakeupstream"
)

func TestAdaptiveLimitSlowStartDropAndProbe(t *testing.T) {
	l := newAdaptiveLimit(0)
	for i := range 5 {
		l.succeeded(l.get())
		if got := l.get(); got != int64(i+2) {
			t.Fatalf("slow start: limit %d after %d successes", got, i+1)
		}
	}
	l.succeeded(1) // not at the limit: no growth
	if l.get() != 6 {
		t.Fatalf("grew on a success that was not at the limit: %d", l.get())
	}
	if !l.overloaded(6) || l.get() != 5 {
		t.Fatalf("after an overload at 6 in flight: limit %d, want 5", l.get())
	}
	// Near the level that overloaded, growth is slow: 1/(8·limit) each.
	successes := 0
	for l.get() < 6 {
		l.succeeded(l.get())
		successes++
	}
	if successes < 35 {
		t.Errorf("limit back at the overload level after %d successes, want about 40", successes)
	}
	if l.overloaded(1) {
		t.Error("one request in flight taken as a concurrency overload")
	}
	c := newAdaptiveLimit(10)
	if c.get() != 10 {
		t.Fatalf("with MaxConcurrent 10 the limit starts at %d", c.get())
	}
	for range 100 {
		c.succeeded(c.get())
	}
	if c.get() != 10 {
		t.Errorf("limit %d went past the ceiling", c.get())
	}
}

// unknownCaps is five DeepSeek accounts whose caps the pool is not told.
func unknownCaps(t *testing.T, cap int) (*fakeupstream.Server, []string, *Pool, *http.Client) {
	t.Helper()
	accounts := map[string]fakeupstream.Account{}
	var secrets []string
	for i := range 5 {
		s := fmt.Sprintf("sk-unknown-%d-0123456789abcdef", i)
		secrets = append(secrets, s)
		accounts[s] = fakeupstream.Account{MaxInFlight: cap}
	}
	sim := startInMemorySim(t, fakeupstream.Config{
		Mode: fakeupstream.DeepSeek, Accounts: accounts, Keys: simKeys(nil, secrets...),
		Latency: 5 * time.Millisecond, Jitter: 5 * time.Millisecond, Seed: 7,
	})
	p, err := New(keysOf(secrets...))
	if err != nil {
		t.Fatal(err)
	}
	return sim, secrets, p, &http.Client{Transport: NewTransport(p, WithBase(sim.Client().Transport))}
}

func TestUnknownCapsAreLearned(t *testing.T) { inVirtualTime(t, testUnknownCapsAreLearned) }

func testUnknownCapsAreLearned(t *testing.T) {
	sim, secrets, p, client := unknownCaps(t, 4)
	const requests = 600
	if failed := hammer(t, client, sim.URL, 30, requests); failed != 0 {
		t.Errorf("%d of %d requests failed", failed, requests)
	}
	total := sim.Total()
	share := float64(total.RateLimited) / requests
	t.Logf("unknown cap 4 x 5 accounts, 30 callers, %d requests: %d upstream 429s (%.1f%% of requests)", requests, total.RateLimited, 100*share)
	if share >= 0.10 {
		t.Errorf("upstream 429s are %.1f%% of requests, want under 10%%", 100*share)
	}
	var learned []int
	for _, st := range p.Stats() {
		learned = append(learned, st.Limit)
	}
	t.Logf("learned limits: %v", learned)
	for i, st := range p.Stats() {
		if st.Limit < 3 || st.Limit > 5 {
			t.Errorf("%s: learned limit %d, want about 4", st.Name, st.Limit)
		}
		if sim.MaxInFlight(secrets[i]) > 4 {
			t.Errorf("account %d saw %d in flight", i, sim.MaxInFlight(secrets[i]))
		}
	}
}

func TestLearnedLimitFollowsADrainingBalance(t *testing.T) {
	inVirtualTime(t, testLearnedLimitFollowsADrainingBalance)
}

func testLearnedLimitFollowsADrainingBalance(t *testing.T) {
	sim, secrets, p, client := unknownCaps(t, 8)
	setCap := func(cap int) {
		for _, s := range secrets {
			sim.SetAccount(s, fakeupstream.Account{MaxInFlight: cap})
		}
	}
	limits := func() (lo, hi int) {
		lo = 1 << 30
		for _, st := range p.Stats() {
			lo, hi = min(lo, st.Limit), max(hi, st.Limit)
		}
		return lo, hi
	}
	// Phase 1: cap 8. Phase 2: the balance drains, cap 2. Phase 3: topped
	// up, cap 8 again.
	if failed := hammer(t, client, sim.URL, 60, 1500); failed != 0 {
		t.Fatalf("phase 1: %d failures", failed)
	}
	lo, hi := limits()
	t.Logf("cap 8: learned limits %d..%d, %d upstream 429s so far", lo, hi, sim.Total().RateLimited)
	if lo < 6 || hi > 9 {
		t.Errorf("cap 8: learned limits %d..%d", lo, hi)
	}
	setCap(2)
	if failed := hammer(t, client, sim.URL, 60, 600); failed != 0 {
		t.Fatalf("phase 2: %d failures", failed)
	}
	lo, hi = limits()
	t.Logf("cap 2: learned limits %d..%d, %d upstream 429s so far", lo, hi, sim.Total().RateLimited)
	if hi > 3 {
		t.Errorf("cap 2: learned limits %d..%d, want at most 3", lo, hi)
	}
	setCap(8)
	if failed := hammer(t, client, sim.URL, 60, 3000); failed != 0 {
		t.Fatalf("phase 3: %d failures", failed)
	}
	lo, hi = limits()
	t.Logf("cap 8 again: learned limits %d..%d, %d upstream 429s in all", lo, hi, sim.Total().RateLimited)
	if lo < 5 {
		t.Errorf("cap back to 8: learned limits %d..%d, want them back up", lo, hi)
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
