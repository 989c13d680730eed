package keypool

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/keypool/keypool/internal/fakeupstream"
)

// The model as callers name it, and as provider B names it.
const (
	askedModel = "deepseek-chat"
	bModel     = "deepseek/deepseek-chat"
)

// twoProviders is provider A (five keys, Bearer, the callers' model
// names, priority 1) and provider B (two keys, api-key, its own model
// names, priority 0) on hosts of their own, each a simulator, with every
// request either of them receives recorded.
type twoProviders struct {
	a, b     *fakeupstream.Server
	aSecrets []string
	bSecrets []string
	pool     *Pool
	client   *http.Client
	start    time.Time

	mu   sync.Mutex
	seen []seenRequest
}

// seenRequest is a request as a provider received it.
type seenRequest struct {
	host   string
	at     time.Duration // since the providers started
	waited time.Duration // since the caller sent it
	header http.Header
	model  string
	body   []byte
}

func newTwoProviders(t *testing.T, editA, editB func(*fakeupstream.Config), opts ...Option) *twoProviders {
	t.Helper()
	tp := &twoProviders{start: time.Now()}
	var keys []Key
	for i := range 5 {
		s := fmt.Sprintf("sk-provider-a-%d-0123456789", i)
		tp.aSecrets = append(tp.aSecrets, s)
		keys = append(keys, Key{Secret: s, Name: fmt.Sprintf("a%d", i), BaseURL: "https://a.test", Priority: 1})
	}
	for i := range 2 {
		s := fmt.Sprintf("b-provider-key-%d-abcdefgh", i)
		tp.bSecrets = append(tp.bSecrets, s)
		keys = append(keys, Key{Secret: s, Name: fmt.Sprintf("b%d", i), BaseURL: "https://b.test/openai", Priority: 0,
			ModelMap: map[string]string{askedModel: bModel}, Auth: AuthAPIKey})
	}
	cfgA := fakeupstream.Config{Keys: simKeys(nil, tp.aSecrets...), Models: []string{askedModel}, Latency: 50 * time.Millisecond, Seed: 1}
	cfgB := fakeupstream.Config{Keys: simKeys(nil, tp.bSecrets...), Models: []string{bModel}, Latency: 50 * time.Millisecond, Seed: 2}
	if editA != nil {
		editA(&cfgA)
	}
	if editB != nil {
		editB(&cfgB)
	}
	tp.a, tp.b = startInMemorySim(t, cfgA), startInMemorySim(t, cfgB)
	tp.pool = newRealClockPool(t, keys, opts...)
	tp.client = &http.Client{Transport: NewTransport(tp.pool, WithBase(roundTripFunc(tp.route)))}
	return tp
}

// route sends a request to the provider its host names, recording it.
func (tp *twoProviders) route(req *http.Request) (*http.Response, error) {
	sim := map[string]*fakeupstream.Server{"a.test": tp.a, "b.test": tp.b}[req.URL.Host]
	if sim == nil {
		return nil, fmt.Errorf("no provider at %s", req.URL.Host)
	}
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	s := seenRequest{host: req.URL.Host, at: time.Since(tp.start), header: req.Header.Clone(), body: body,
		model: parseRequestMeta(body).Model}
	if ns, err := strconv.ParseInt(req.Header.Get("X-Test-Sent"), 10, 64); err == nil {
		s.waited = time.Since(time.Unix(0, ns))
	}
	tp.mu.Lock()
	tp.seen = append(tp.seen, s)
	tp.mu.Unlock()
	return sim.Client().Transport.RoundTrip(req)
}

// send posts a chat completion, stamped with when it was sent.
func (tp *twoProviders) send() error {
	req, _ := http.NewRequest(http.MethodPost, "https://api.example.test/v1/chat/completions", strings.NewReader(chatBody))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Test-Sent", strconv.FormatInt(time.Now().UnixNano(), 10))
	resp, err := tp.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// loadFor sends requests from callers until d has passed since the
// providers started, and returns how many failed.
func (tp *twoProviders) loadFor(callers int, d time.Duration) int64 {
	return runLoad(callers, 1<<30, func(int) error {
		if time.Since(tp.start) >= d {
			return errStopLoad
		}
		return tp.send()
	})
}

func (tp *twoProviders) requests() []seenRequest {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return append([]seenRequest(nil), tp.seen...)
}

// checkBRequests checks that every request B received carried B's model
// name and one of B's secrets in api-key, and nothing of A's.
func (tp *twoProviders) checkBRequests(t *testing.T) {
	t.Helper()
	for _, s := range tp.requests() {
		if s.host != "b.test" {
			continue
		}
		if s.model != bModel {
			t.Errorf("B received model %q, want %q", s.model, bModel)
		}
		if got := s.header.Get("Api-Key"); got != tp.bSecrets[0] && got != tp.bSecrets[1] {
			t.Errorf("B received api-key %q, not one of its secrets", maskSecret(got))
		}
		if s.header.Get("Authorization") != "" {
			t.Errorf("B received an Authorization header")
		}
		for _, a := range tp.aSecrets {
			if strings.Contains(fmt.Sprint(s.header), a) || bytes.Contains(s.body, []byte(a)) {
				t.Errorf("B received A's secret %s", maskSecret(a))
			}
		}
	}
}

// Provider A fails every request from 2 s to 6 s; B takes the traffic
// meanwhile, and hands it back within a cooldown of A's recovery.
func TestProviderOutageFailsOverToTheNextTier(t *testing.T) {
	t.Parallel()
	inVirtualTime(t, testProviderOutageFailsOverToTheNextTier)
}

func testProviderOutageFailsOverToTheNextTier(t *testing.T) {
	const outageStart, outageEnd = 2 * time.Second, 6 * time.Second
	tp := newTwoProviders(t, func(c *fakeupstream.Config) {
		c.Outages = []fakeupstream.Outage{{Start: outageStart, End: outageEnd, Status: http.StatusServiceUnavailable}}
	}, nil)
	failed := tp.loadFor(8, 10*time.Second)

	// Back within a cooldown (the pool's default, 1 s) of the recovery;
	// the slack is one request's latency.
	back := outageEnd + time.Second + 100*time.Millisecond
	var total, outside, bOutside, bDuring int
	var lastB time.Duration
	for _, s := range tp.requests() {
		during := s.at >= outageStart && s.at < back
		if !during {
			outside++
		}
		if s.host == "b.test" {
			lastB = max(lastB, s.at)
			if during {
				bDuring++
			} else {
				bOutside++
			}
		}
		total++
	}
	t.Logf("%d upstream requests; B got %d during the outage, %d of the %d outside it; B's last at %v",
		total, bDuring, bOutside, outside, lastB.Round(time.Millisecond))
	if failed != 0 {
		t.Errorf("%d caller errors", failed)
	}
	if bDuring == 0 {
		t.Errorf("B served nothing during A's outage")
	}
	if float64(bOutside) >= 0.01*float64(outside) {
		t.Errorf("B got %d of the %d requests outside the outage, want under 1%%", bOutside, outside)
	}
	if lastB >= back {
		t.Errorf("B still got requests at %v, A recovered at %v", lastB, outageEnd)
	}
	tp.checkBRequests(t)
	for _, st := range tp.pool.Stats() {
		if st.Name[0] == 'a' && st.Priority != 1 || st.Name[0] == 'b' && st.Priority != 0 {
			t.Errorf("%s: Stats says priority %d", st.Name, st.Priority)
		}
	}
}

// A provider that answers every request 429 with Retry-After: 30 hands
// its traffic to the next tier at once, not after 30 s.
func TestRateLimitedTierHandsOverAtOnce(t *testing.T) {
	t.Parallel()
	inVirtualTime(t, testRateLimitedTierHandsOverAtOnce)
}

func testRateLimitedTierHandsOverAtOnce(t *testing.T) {
	tp := newTwoProviders(t, func(c *fakeupstream.Config) {
		c.Outages = []fakeupstream.Outage{{End: time.Hour, Status: http.StatusTooManyRequests, RetryAfter: 30 * time.Second}}
	}, nil)
	var slowest time.Duration
	var mu sync.Mutex
	failed := runLoad(4, 200, func(int) error {
		start := time.Now()
		err := tp.send()
		mu.Lock()
		slowest = max(slowest, time.Since(start))
		mu.Unlock()
		return err
	})
	a := tp.a.Total()
	t.Logf("200 requests in %v, the slowest %v; A answered %d 429s", time.Since(tp.start), slowest, a.RateLimited)
	if failed != 0 {
		t.Errorf("%d caller errors", failed)
	}
	if slowest > time.Second {
		t.Errorf("a request took %v: it waited for A's cooldown", slowest)
	}
	if a.Requests > len(tp.aSecrets) {
		t.Errorf("A received %d requests; want one per key, then none while it cools down", a.Requests)
	}
	tp.checkBRequests(t)
}

// With WithSpillAfter, a request that has waited that long for the
// higher tier's busy keys goes to the lower tier; none that waited less.
func TestSpillAfter(t *testing.T) {
	t.Parallel()
	for _, spill := range []time.Duration{0, 100 * time.Millisecond} {
		t.Run(fmt.Sprint(spill), func(t *testing.T) {
			inVirtualTime(t, func(t *testing.T) { testSpillAfter(t, spill) })
		})
	}
}

func testSpillAfter(t *testing.T, spill time.Duration) {
	slowA := func(c *fakeupstream.Config) { c.Latency = 400 * time.Millisecond }
	tp := newTwoProviders(t, slowA, nil, WithSpillAfter(spill))
	for i := range tp.aSecrets {
		if err := tp.pool.SetLimits(fmt.Sprintf("a%d", i), Limits{MaxConcurrent: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if failed := tp.loadFor(10, 5*time.Second); failed != 0 {
		t.Errorf("%d caller errors", failed)
	}
	var toA, toB, quickA int
	var quickestB time.Duration = time.Hour
	for _, s := range tp.requests() {
		if s.host == "b.test" {
			toB++
			quickestB = min(quickestB, s.waited)
			continue
		}
		toA++
		if s.waited < spill {
			quickA++
		}
	}
	t.Logf("spill after %v: A got %d (%d after waiting less), B got %d (the quickest after %v)", spill, toA, quickA, toB, quickestB)
	switch {
	case spill == 0 && toB != 0:
		t.Errorf("B got %d requests without WithSpillAfter", toB)
	case spill > 0 && toB == 0:
		t.Errorf("B got nothing while requests waited for A")
	case spill > 0 && quickestB < spill:
		t.Errorf("B got a request that had waited %v, less than %v", quickestB, spill)
	}
	tp.checkBRequests(t)
}

// A stream that broke after it reached the caller is not replayed on the
// next tier, as it is not on another key.
func TestStartedStreamIsNotReplayedOnAnotherTier(t *testing.T) {
	inVirtualTime(t, func(t *testing.T) {
		tp := newTwoProviders(t, func(c *fakeupstream.Config) {
			c.StreamChunks = 5
			for s, k := range c.Keys {
				k.BreakAfterFrames = 2
				c.Keys[s] = k
			}
		}, nil)
		body := strings.Replace(chatBody, `{"model"`, `{"stream":true,"model"`, 1)
		req, _ := http.NewRequest(http.MethodPost, "https://api.example.test/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := tp.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Errorf("the broken stream read to its end")
		}
		if got := tp.b.Total().Requests; got != 0 {
			t.Errorf("B received %d requests: the stream was replayed", got)
		}
		if got := tp.a.Total().Requests; got != 1 {
			t.Errorf("A received %d requests, want 1", got)
		}
	})
}

// A retry on another tier after a provider failure goes at once and is
// not charged to the retry budget: it adds no load to the provider that
// failed.
func TestFailoverToAnotherTierSpendsNoRetryBudget(t *testing.T) {
	var slept atomic.Int32
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.URL.Host == "a.test" {
			return answer(http.StatusServiceUnavailable), nil
		}
		return answer(http.StatusOK), nil
	})
	tr, _, _ := newFakeClockTransport(t, []Key{
		{Secret: "sk-a-0123456789", BaseURL: "https://a.test", Priority: 1},
		{Secret: "sk-b-0123456789", BaseURL: "https://b.test"},
	}, base, nil, WithRetryBudget(0, 0), WithBackoff(func() backoff.BackOff { slept.Add(1); return &backoff.ZeroBackOff{} }))
	for range 3 {
		resp, err := post(t, tr, "https://api.example.test", chatBody)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("got %d: the failover to tier 0 was refused", resp.StatusCode)
		}
	}
	if n := slept.Load(); n != 0 {
		t.Errorf("backed off %d times before going to another tier", n)
	}
}
