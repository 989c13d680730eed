package keypool

import (
	"bytes"
	"context"
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

// Once a bug: an ejected key that is due for its probe but still has requests
// in flight (streams begun before it was ejected) reports itself busy,
// and a busy key is "worth waiting for": the request then waits on the
// higher tier instead of going to the lower one, which is idle.
//
// Contract: a lower tier gets a request when every key of the higher one
// that serves it is disabled, ejected or cooling down. The tier-1 key
// here is ejected; the request must go to tier 0 at once.
func TestEjectedKeyWithRequestsInFlightDoesNotHoldBackLowerTier(t *testing.T) {
	p, c := newFakeClockPool(t, []Key{
		{Secret: "sk-tier1-0123456789", Name: "high", Priority: 1, MaxConcurrent: 4},
		{Secret: "sk-tier0-0123456789", Name: "low", Priority: 0},
	}, WithEjection(1, time.Minute), WithCooldown(time.Second))
	proveAll(p)
	// A long stream holds the high key.
	stream := mustAcquire(t, p, &acquireRequest{})
	if stream.key.name != "high" {
		t.Fatalf("first request went to %s", stream.key.name)
	}
	defer stream.release()
	// Another request fails on it: it is ejected for a minute, probed
	// every second.
	failing := mustAcquire(t, p, &acquireRequest{})
	if failing.key.name != "high" {
		t.Fatalf("second request went to %s", failing.key.name)
	}
	p.report(failing, Outcome{Effect: EffectFailure}, answer(503))
	failing.release()
	if st := p.Stats()[0]; st.State != StateEjected {
		t.Fatalf("high is %v, want ejected", st.State)
	}
	// Before the probe is due, tier 0 serves: that works.
	if l, _, err := p.acquire(context.Background(), &acquireRequest{}, 0); err != nil || l.key.name != "low" {
		t.Fatalf("before the probe: %v, %v; want the low key", l, err)
	} else {
		l.release()
	}
	// The probe is due, but the high key still has the stream in flight.
	c.Advance(time.Second)
	l, _, err := p.acquire(context.Background(), &acquireRequest{}, 0)
	if err != nil {
		t.Fatalf("probe due, high key ejected with a stream in flight: %v; want the low key at once (high is ejected, not busy)", err)
	}
	defer l.release()
	if l.key.name != "low" {
		t.Errorf("got %s", l.key.name)
	}
}

// Once a bug: with adaptive limits on (the default), a bare 429 (no
// Retry-After, as DeepSeek sends) does not cool the account down, so
// after a 429 on every tier-1 key the request goes back to a tier-1 key
// it already tried instead of to tier 2; 429s are not charged against
// WithMaxAttempts, so it can take many of them.
//
// Contract: "a request that ... 429s on every tier-1 key goes to tier 2
// at once". Here tier 1 is one key that answers every request 429: the
// request must make one attempt there, and the next on tier 0.
func TestBare429OnEveryHigherKeyGoesToLowerTierAtOnce(t *testing.T) {
	const high, low = "sk-high-0123456789", "sk-low-0123456789"
	up := newRecordingUpstream()
	up.handle(high, func(int, *http.Request) *http.Response {
		return jsonAnswer(429, `{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_reached"}}`)
	})
	tr, p, _ := newFakeClockTransport(t, []Key{
		{Secret: high, Name: "high", Priority: 1},
		{Secret: low, Name: "low", Priority: 0},
	}, up, nil)
	code, body, err := postTo(t, tr, "application/json", chatBody)
	if err != nil || code != 200 {
		t.Fatalf("got %d %s %v, want the low tier's 200", code, body, err)
	}
	if n := up.count(high); n != 1 {
		t.Errorf("the high key got %d requests (all 429s) before the low tier served; want 1", n)
	}
	for _, st := range p.Stats() {
		t.Logf("%s: %d requests, %d 429s, state %v, limit %d", st.Name, st.Requests, st.RateLimited, st.State, st.Limit)
	}
}

// As above, with WithAdaptiveLimits(false): a bare 429 cools the account
// for WithCooldown, so the request goes to tier 0 at once.
func TestBare429WithoutAdaptiveLimitsGoesToLowerTier(t *testing.T) {
	const high, low = "sk-high-0123456789", "sk-low-0123456789"
	up := newRecordingUpstream()
	up.handle(high, func(int, *http.Request) *http.Response {
		return jsonAnswer(429, `{"error":{"message":"Rate limit reached","code":"rate_limit_reached"}}`)
	})
	tr, _, _ := newFakeClockTransport(t, []Key{
		{Secret: high, Priority: 1},
		{Secret: low, Priority: 0},
	}, up, []Option{WithAdaptiveLimits(false)})
	code, _, err := postTo(t, tr, "application/json", chatBody)
	if err != nil || code != 200 {
		t.Fatalf("got %d %v", code, err)
	}
	if n := up.count(high); n != 1 {
		t.Errorf("the high key got %d requests; want 1", n)
	}
}

// Once a gap: with WithSpillAfter(0), a
// request whose tier-1 key is out of its RPM budget for longer than the
// pool's maximum wait fails at once with ErrWaitTimeout, while the tier-0
// key is idle. The pool knows the higher tier cannot serve it before its
// deadline; failing the request rather than using the fallback defeats
// the fallback's purpose. (By the letter, RPM exhaustion is not one of
// disabled/ejected/cooling, and 0 means "never spill on waiting"; but a
// key that cannot take the request before its deadline "can't serve it".)
func TestHigherTierOutOfBudgetPastTheDeadlineSpills(t *testing.T) {
	p, _ := newFakeClockPool(t, []Key{
		{Secret: "sk-tier1-0123456789", Name: "high", Priority: 1, RPM: 1},
		{Secret: "sk-tier0-0123456789", Name: "low", Priority: 0},
	}, WithMaxWait(10*time.Second))
	proveAll(p)
	first := mustAcquire(t, p, &acquireRequest{})
	if first.key.name != "high" {
		t.Fatalf("first went to %s", first.key.name)
	}
	first.release()
	// The high key's next request is a minute away; the wait is 10 s.
	l, err := acquireFor(p, context.Background(), &acquireRequest{})
	if err != nil {
		t.Fatalf("high out of RPM for a minute, max wait 10 s, low idle: %v; want the low key", err)
	}
	defer l.release()
	if l.key.name != "low" {
		t.Errorf("got %s", l.key.name)
	}
}

// Keys of one Account spread over two priorities: a 429 with Retry-After
// on the tier-2 key cools the account, so its tier-1 key cannot serve
// either; the request goes to tier 0 (another account) at once, and the
// cooled account's lower key does not get a request meanwhile.
func TestAccountSpreadOverTiersCoolsAsOne(t *testing.T) {
	const k2, k1, k0 = "sk-acct-high-0123456789", "sk-acct-mid-0123456789", "sk-other-low-0123456789"
	up := newRecordingUpstream()
	up.handle(k2, func(int, *http.Request) *http.Response {
		return jsonAnswer(429, `{"error":{"message":"slow down","code":"rate_limit_exceeded"}}`, "Retry-After", "30")
	})
	tr, p, _ := newFakeClockTransport(t, []Key{
		{Secret: k2, Name: "acct-high", Account: "acct", Priority: 2},
		{Secret: k1, Name: "acct-mid", Account: "acct", Priority: 1},
		{Secret: k0, Name: "other-low", Priority: 0},
	}, up, nil)
	for range 3 {
		if code, _, err := postTo(t, tr, "application/json", chatBody); err != nil || code != 200 {
			t.Fatalf("got %d %v", code, err)
		}
	}
	if up.count(k2) != 1 || up.count(k1) != 0 || up.count(k0) != 3 {
		t.Errorf("requests: high %d, mid %d, low %d; want 1, 0, 3", up.count(k2), up.count(k1), up.count(k0))
	}
	for _, st := range p.Stats() {
		if st.Account == "acct" && st.State != StateCooling {
			t.Errorf("%s is %v, want cooling", st.Name, st.State)
		}
	}
}

// Three tiers whose providers all fail: each request makes at most
// WithMaxAttempts attempts, one per tier at first and then within the
// retry budget; the sum over many requests stays bounded.
func TestThreeFailingTiersAreBounded(t *testing.T) {
	up := newRecordingUpstream()
	var keys []Key
	for i := range 3 {
		s := fmt.Sprintf("sk-tier%d-0123456789", i)
		keys = append(keys, Key{Secret: s, Priority: i})
		up.handle(s, func(int, *http.Request) *http.Response { return jsonAnswer(500, `{"error":{"message":"down"}}`) })
	}
	tr, _, c := newFakeClockTransport(t, keys, up, []Option{WithEjection(1000, time.Minute)}, WithMaxAttempts(4))
	const requests = 50
	for i := range requests {
		code, _, err := postTo(t, tr, "application/json", chatBody)
		if err == nil && code != 500 {
			t.Fatalf("request %d: %d", i, code)
		}
		c.Advance(10 * time.Millisecond)
	}
	total := len(up.requests())
	t.Logf("%d requests made %d attempts", requests, total)
	if total > requests*4 {
		t.Errorf("%d attempts for %d requests, over WithMaxAttempts(4) each", total, requests)
	}
	// One per tier, plus the budget's retries: 20% of requests and 1 a
	// second (0.5 s of fake time here, so the floor is 10 a window).
	if limit := requests*3 + requests/5 + 10; total > limit {
		t.Errorf("%d attempts for %d requests, want at most %d: a retry storm", total, requests, limit)
	}
}

// Load over three tiers while keys are added, removed and reweighted,
// mappings refused, and Stats read, under -race: every request ends with
// an answer, nothing leaks, and no mapped key ever gets the caller's
// model name (see TestMappedKeyAddedMidRequestNeverGetsCallerModel for the
// one path where it does; here every mapped key is there from the
// start).
func TestReconfigureTiersUnderLoad(t *testing.T) {
	inVirtualTime(t, func(t *testing.T) {
		up := newRecordingUpstream()
		var keys []Key
		for i := range 6 {
			k := Key{Secret: fmt.Sprintf("sk-k%d-0123456789", i), Name: fmt.Sprintf("k%d", i), Priority: i % 3, MaxConcurrent: 2}
			if i%3 == 0 {
				k.ModelMap = map[string]string{askedModel: fmt.Sprintf("p%d/%s", i, askedModel)}
			}
			keys = append(keys, k)
			n := i
			up.handle(k.Secret, func(j int, _ *http.Request) *http.Response {
				time.Sleep(20 * time.Millisecond)
				switch {
				case n == 0 && j%7 == 3:
					return jsonAnswer(404, modelNotFoundBody)
				case n == 2 && j%5 == 1:
					return jsonAnswer(503, `{}`)
				case n == 4 && j%11 == 2:
					return jsonAnswer(429, `{}`, "Retry-After", "1")
				}
				return nil
			})
		}
		p := newRealClockPool(t, keys, WithSpillAfter(30*time.Millisecond), WithDisableFor(time.Second))
		client := &http.Client{Transport: NewTransport(p, WithBase(up))}
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				case <-time.After(15 * time.Millisecond):
				}
				_ = p.Stats()
				switch i % 4 {
				case 0:
					_ = p.SetWeight(fmt.Sprintf("k%d", i%6), float64(1+i%3))
				case 1:
					_ = p.Add(Key{Secret: fmt.Sprintf("sk-extra%d-0123456789", i), Name: fmt.Sprintf("x%d", i), Priority: i % 4})
				case 2:
					_ = p.Remove(fmt.Sprintf("x%d", i-1))
				case 3:
					_ = p.SetLimits(fmt.Sprintf("k%d", i%6), Limits{MaxConcurrent: 1 + i%3})
				}
			}
		}()
		failed := runLoad(12, 600, func(int) error { return postChat(context.Background(), client, "https://api.example.test", chatBody) })
		close(done)
		wg.Wait()
		if failed != 0 {
			t.Errorf("%d requests failed", failed)
		}
		for _, s := range up.requests() {
			m := parseRequestMeta(s.body).Model
			mapped := strings.Contains(s.secret, "-k0-") || strings.Contains(s.secret, "-k3-")
			if mapped && !strings.HasSuffix(m, "/"+askedModel) || !mapped && m != askedModel {
				t.Errorf("key %s got model %q", maskSecret(s.secret), m)
			}
		}
		var byTier = map[int]int64{}
		for _, st := range p.Stats() {
			byTier[st.Priority] += st.Successes
			if st.InFlight != 0 {
				t.Errorf("%s: %d in flight after the load", st.Name, st.InFlight)
			}
		}
		t.Logf("successes by priority: %v", byTier)
	})
}
