package keypool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/keypool/keypool/internal/fakeupstream"
)

const chatBody = `{"model":"deepseek-chat","messages":[{"role":"user","content":"hi"}]}`

func startUpstream(t *testing.T, cfg fakeupstream.Config) *fakeupstream.Server {
	t.Helper()
	s := fakeupstream.New(cfg)
	t.Cleanup(s.Close)
	return s
}

// newTestTransport builds a pool on a fake clock and a transport whose
// base talks to loopback and whose backoff does not sleep.
func newTestTransport(t *testing.T, keys []Key, base http.RoundTripper, popts []Option, topts ...TransportOption) (*Transport, *Pool, *fakeClock) {
	t.Helper()
	p, c := newTestPool(t, keys, popts...)
	opts := append([]TransportOption{WithBase(base), WithBackoff(func() backoff.BackOff { return &backoff.ZeroBackOff{} })}, topts...)
	return NewTransport(p, opts...), p, c
}

func post(t *testing.T, rt http.RoundTripper, url, body string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer client-placeholder")
	req.Header.Set("Content-Type", "application/json")
	return rt.RoundTrip(req)
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func keysOf(secrets ...string) []Key {
	keys := make([]Key, len(secrets))
	for i, s := range secrets {
		keys[i] = Key{Secret: s}
	}
	return keys
}

func simKeys(faults map[string]fakeupstream.Fault, secrets ...string) map[string]fakeupstream.Key {
	m := map[string]fakeupstream.Key{}
	for _, s := range secrets {
		m[s] = fakeupstream.Key{Fault: faults[s]}
	}
	return m
}

func TestSuccessReplacesAuthAndLeavesRequestAlone(t *testing.T) {
	var gotAuth []string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = append(gotAuth, r.Header.Get("Authorization")+"|"+r.Header.Get("Api-Key")+"|"+r.Header.Get("X-Api-Key"))
		io.WriteString(w, `{"ok":true}`)
	}))
	defer upstream.Close()
	tr, p, _ := newTestTransport(t, keysOf("sk-one"), upstream.Client().Transport, nil)

	req, _ := http.NewRequest(http.MethodPost, upstream.URL+"/v1/chat/completions", strings.NewReader(chatBody))
	req.Header.Set("Authorization", "Bearer client-placeholder")
	req.Header.Set("Api-Key", "placeholder")
	req.Header.Set("X-Trace", "t1")
	before := req.Header.Clone()
	url := req.URL.String()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if p.Stats()[0].InFlight != 1 {
		t.Error("slot released before the body was read")
	}
	if body := readAll(t, resp); body != `{"ok":true}` {
		t.Errorf("body %q", body)
	}
	if p.Stats()[0].InFlight != 0 {
		t.Error("slot not released after the body was closed")
	}
	if gotAuth[0] != "Bearer sk-one||" {
		t.Errorf("upstream saw auth %q", gotAuth[0])
	}
	if fmt.Sprint(req.Header) != fmt.Sprint(before) || req.URL.String() != url {
		t.Errorf("caller's request changed: %v %v", req.Header, req.URL)
	}
	if resp.Request != req {
		t.Error("resp.Request is not the caller's request (the sent one holds the secret)")
	}
	for _, style := range []struct {
		auth AuthStyle
		want string
	}{{AuthAPIKey, "|sk-one|"}, {AuthXAPIKey, "||sk-one"}} {
		tr := NewTransport(p, WithBase(upstream.Client().Transport), WithAuth(style.auth))
		resp, err := post(t, tr, upstream.URL, chatBody)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		if got := gotAuth[len(gotAuth)-1]; got != style.want {
			t.Errorf("auth style %d: upstream saw %q, want %q", style.auth, got, style.want)
		}
	}
}

func TestRevokedKeyCostsOneRequestAndFailsOver(t *testing.T) {
	sim := startUpstream(t, fakeupstream.Config{
		Keys:    simKeys(map[string]fakeupstream.Fault{"sk-bad": fakeupstream.FaultRevoked}, "sk-bad", "sk-good1", "sk-good2"),
		Latency: 2 * time.Millisecond,
	})
	tr, p, _ := newTestTransport(t, keysOf("sk-bad", "sk-good1", "sk-good2"), sim.Client().Transport, nil)
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := post(t, tr, sim.URL, chatBody)
			if err != nil || resp.StatusCode != 200 {
				failed.Add(1)
			}
			if resp != nil {
				readAll(t, resp)
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d requests failed", failed.Load())
	}
	if got := sim.Counters("sk-bad").Requests; got != 1 {
		t.Errorf("revoked key got %d requests upstream, want 1", got)
	}
	if st := p.Stats()[0]; st.State != StateDisabled || st.Failures != 1 {
		t.Errorf("revoked key: %v, %d failures", st.State, st.Failures)
	}
}

func TestPaymentAndQuotaDisableTheAccount(t *testing.T) {
	for _, fault := range []fakeupstream.Fault{fakeupstream.FaultNoBalance, fakeupstream.FaultQuota} {
		sim := startUpstream(t, fakeupstream.Config{Keys: map[string]fakeupstream.Key{
			"sk-a1": {Account: "acme", Fault: fault}, "sk-a2": {Account: "acme"}, "sk-b": {},
		}})
		keys := []Key{{Secret: "sk-a1", Account: "acme", Weight: 100}, {Secret: "sk-a2", Account: "acme"}, {Secret: "sk-b"}}
		tr, p, _ := newTestTransport(t, keys, sim.Client().Transport, nil)
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

// scripted answers each request with the next status and headers of a
// script, per key, and records what it saw.
type scripted struct {
	mu     sync.Mutex
	script map[string][]func(w http.ResponseWriter)
	seen   []string // secrets, in order
	bodies []string
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	secret := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.seen = append(s.seen, secret)
	s.bodies = append(s.bodies, string(b))
	var step func(http.ResponseWriter)
	if q := s.script[secret]; len(q) > 0 {
		step, s.script[secret] = q[0], q[1:]
	}
	s.mu.Unlock()
	if step == nil {
		io.WriteString(w, `{"ok":true}`)
		return
	}
	step(w)
}

func status(code int, body string, header ...string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(code)
		io.WriteString(w, body)
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
			tr, p, c := newTestTransport(t, keysOf("sk-a", "sk-b"), upstream.Client().Transport, []Option{WithMaxWait(time.Hour)})
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
	tr, p, _ := newTestTransport(t, keysOf("sk-a", "sk-b"), upstream.Client().Transport,
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

func TestClientErrorsAreReturnedUntouched(t *testing.T) {
	for _, code := range []int{400, 404, 422} {
		s := &scripted{script: map[string][]func(http.ResponseWriter){
			"sk-a": {status(code, `{"error":{"message":"bad request","code":"invalid"}}`)},
		}}
		upstream := httptest.NewServer(s)
		tr, p, _ := newTestTransport(t, keysOf("sk-a", "sk-b"), upstream.Client().Transport, nil, WithMaxAttempts(3))
		p.Disable(p.Stats()[1].Name)
		resp, err := post(t, tr, upstream.URL, chatBody)
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(t, resp); resp.StatusCode != code || body != `{"error":{"message":"bad request","code":"invalid"}}` {
			t.Errorf("%d: got %d %q", code, resp.StatusCode, body)
		}
		if len(s.seen) != 1 {
			t.Errorf("%d: %d attempts, want 1", code, len(s.seen))
		}
		upstream.Close()
	}
}

func TestShouldRetryHeaderWins(t *testing.T) {
	s := &scripted{script: map[string][]func(http.ResponseWriter){
		"sk-a": {status(500, `{}`, "X-Should-Retry", "false"), status(400, `{}`, "X-Should-Retry", "true")},
	}}
	upstream := httptest.NewServer(s)
	defer upstream.Close()
	tr, _, _ := newTestTransport(t, keysOf("sk-a"), upstream.Client().Transport, nil)
	resp, _ := post(t, tr, upstream.URL, chatBody)
	readAll(t, resp)
	if resp.StatusCode != 500 || len(s.seen) != 1 {
		t.Errorf("x-should-retry false: status %d after %d attempts", resp.StatusCode, len(s.seen))
	}
	resp, _ = post(t, tr, upstream.URL, chatBody)
	readAll(t, resp)
	if resp.StatusCode != 200 || len(s.seen) != 3 {
		t.Errorf("x-should-retry true: status %d after %d attempts", resp.StatusCode, len(s.seen)-1)
	}
}

// closedURL is an address nothing listens on.
func closedURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func TestDialErrorFailsOver(t *testing.T) {
	sim := startUpstream(t, fakeupstream.Config{Keys: simKeys(nil, "sk-dead", "sk-live")})
	keys := []Key{{Secret: "sk-dead", BaseURL: closedURL(t), Weight: 100}, {Secret: "sk-live"}}
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	tr, p, _ := newTestTransport(t, keys, base, nil)
	resp, err := post(t, tr, sim.URL, chatBody)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != 200 || sim.Counters("sk-live").OK != 1 {
		t.Errorf("status %d, live key OK %d", resp.StatusCode, sim.Counters("sk-live").OK)
	}
	if p.Stats()[0].Failures != 1 {
		t.Errorf("dead key failures %d", p.Stats()[0].Failures)
	}
}

func TestAllAttemptsFailingGivesAggregateError(t *testing.T) {
	keys := []Key{{Secret: "sk-secret-dead-1", BaseURL: closedURL(t)}, {Secret: "sk-secret-dead-2", BaseURL: closedURL(t)}}
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	tr, _, _ := newTestTransport(t, keys, base, []Option{WithMaxWait(50 * time.Millisecond)}, WithMaxAttempts(2))
	resp, err := post(t, tr, "http://example.invalid", chatBody)
	if resp != nil {
		t.Fatalf("got a response: %v", resp.Status)
	}
	var ae *AttemptsError
	if !errors.As(err, &ae) || len(ae.Attempts) != 2 {
		t.Fatalf("err = %v, want an *AttemptsError with 2 attempts", err)
	}
	var op *net.OpError
	if !errors.As(err, &op) {
		t.Errorf("the dial error is not reachable with errors.As: %v", err)
	}
	if strings.Contains(err.Error(), "secret-dead") {
		t.Errorf("error shows a secret: %v", err)
	}
	if !strings.Contains(err.Error(), ae.Attempts[0].Key) {
		t.Errorf("error does not name the key: %v", err)
	}
}

func TestResetAfterWriteFollowsPolicy(t *testing.T) {
	sim := startUpstream(t, fakeupstream.Config{
		Keys:    map[string]fakeupstream.Key{"sk-a": {Account: "down"}, "sk-b": {}},
		Outages: []fakeupstream.Outage{{Account: "down", Start: 0, End: time.Hour}},
	})
	keys := []Key{{Secret: "sk-a", Weight: 1000}, {Secret: "sk-b"}}
	tr, p, _ := newTestTransport(t, keys, sim.Client().Transport, nil)
	proveAll(p)
	resp, err := post(t, tr, sim.URL, chatBody)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("with retry on reset: %v %v", resp, err)
	}
	readAll(t, resp)

	tr2 := NewTransport(p, WithBase(sim.Client().Transport), WithRetryOnReset(false))
	for range 20 { // the weights send almost every first attempt to sk-a
		resp, err = post(t, tr2, sim.URL, chatBody)
		if err != nil {
			break
		}
		readAll(t, resp)
	}
	if err == nil {
		t.Fatal("a reset was retried although WithRetryOnReset(false)")
	}
}

func TestLastUpstreamResponseIsReturnedWhole(t *testing.T) {
	sim := startUpstream(t, fakeupstream.Config{Keys: simKeys(map[string]fakeupstream.Fault{
		"sk-a": fakeupstream.FaultRevoked, "sk-b": fakeupstream.FaultRevoked,
	}, "sk-a", "sk-b")})
	tr, _, _ := newTestTransport(t, keysOf("sk-a", "sk-b"), sim.Client().Transport, []Option{WithMaxWait(10 * time.Millisecond)})
	resp, err := post(t, tr, sim.URL, chatBody)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != 401 || !strings.Contains(body, "invalid_api_key") {
		t.Errorf("got %d %q, want the upstream's 401", resp.StatusCode, body)
	}
}

func TestBodyReplay(t *testing.T) {
	s := &scripted{script: map[string][]func(http.ResponseWriter){
		"sk-a": {status(500, `{}`)},
	}}
	upstream := httptest.NewServer(s)
	defer upstream.Close()
	tr, p, _ := newTestTransport(t, []Key{{Secret: "sk-a", Weight: 1000}, {Secret: "sk-b"}}, upstream.Client().Transport, nil)
	proveAll(p)
	big := strings.Repeat("x", 100_000)

	// With GetBody: the first attempt sends Body, the retry calls GetBody.
	var gets atomic.Int32
	req, _ := http.NewRequest(http.MethodPost, upstream.URL+"/v1/chat/completions", nil)
	req.Body = io.NopCloser(strings.NewReader(big))
	req.GetBody = func() (io.ReadCloser, error) { gets.Add(1); return io.NopCloser(strings.NewReader(big)), nil }
	req.ContentLength = int64(len(big))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if gets.Load() != 1 || len(s.bodies) != 2 || s.bodies[0] != big || s.bodies[1] != big {
		t.Errorf("GetBody called %d times; bodies %d, equal %v", gets.Load(), len(s.bodies), len(s.bodies) == 2 && s.bodies[1] == big)
	}

	// Without GetBody: read once, replayed identically.
	s.script["sk-a"] = []func(http.ResponseWriter){status(500, `{}`)}
	req, _ = http.NewRequest(http.MethodPost, upstream.URL+"/v1/chat/completions", nil)
	req.Body = io.NopCloser(strings.NewReader(big))
	resp, err = tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if len(s.bodies) != 4 || s.bodies[2] != big || s.bodies[3] != big {
		t.Error("body without GetBody not replayed identically")
	}

	// Too large without GetBody: a clear error, nothing sent.
	small := NewTransport(p, WithBase(upstream.Client().Transport), WithMaxBodyBytes(1000))
	closed := &closeRecorder{Reader: strings.NewReader(big)}
	req, _ = http.NewRequest(http.MethodPost, upstream.URL+"/v1/chat/completions", nil)
	req.Body = closed
	_, err = small.RoundTrip(req)
	if !errors.Is(err, ErrBodyTooLarge) || !strings.Contains(err.Error(), "1000 bytes") {
		t.Errorf("oversized body: %v", err)
	}
	if !closed.closed || len(s.bodies) != 4 {
		t.Error("oversized body not closed, or sent")
	}
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func TestSecretNeverFollowsRedirectToAnotherHost(t *testing.T) {
	var elsewhereAuth atomic.Value
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhereAuth.Store(r.Header.Get("Authorization") + r.Header.Get("Api-Key") + r.Header.Get("X-Api-Key"))
		io.WriteString(w, "moved")
	}))
	defer elsewhere.Close()
	var sameHostAuth atomic.Value
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, elsewhere.URL+"/x", http.StatusTemporaryRedirect)
		case "/here":
			http.Redirect(w, r, "/landed", http.StatusTemporaryRedirect)
		default:
			sameHostAuth.Store(r.Header.Get("Authorization"))
		}
	}))
	defer origin.Close()
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	tr, _, _ := newTestTransport(t, keysOf("sk-topsecret"), base, nil)
	client := &http.Client{Transport: tr}

	resp, err := client.Post(origin.URL+"/away", "application/json", strings.NewReader(chatBody))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if got := elsewhereAuth.Load(); got != "" {
		t.Errorf("the other host received credentials %q", got)
	}
	resp, err = client.Post(origin.URL+"/here", "application/json", strings.NewReader(chatBody))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if got := sameHostAuth.Load(); got != "Bearer sk-topsecret" {
		t.Errorf("same-host redirect: upstream saw %q", got)
	}
}

func TestWaitForBusyKeyHonoursContext(t *testing.T) {
	release := make(chan struct{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer upstream.Close()
	defer close(release)
	tr, p, _ := newTestTransport(t, []Key{{Secret: "sk-a", MaxConcurrent: 1}}, upstream.Client().Transport, nil)
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

func TestStreamHoldsItsSlotUntilClosed(t *testing.T) {
	sim := startUpstream(t, fakeupstream.Config{Keys: simKeys(nil, "sk-a"), StreamChunks: 3})
	tr, p, _ := newTestTransport(t, keysOf("sk-a"), sim.Client().Transport, nil)
	resp, err := post(t, tr, sim.URL, `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	io.ReadFull(resp.Body, buf)
	if p.Stats()[0].InFlight != 1 {
		t.Fatal("stream released its slot before being closed")
	}
	resp.Body.Close()
	if p.Stats()[0].InFlight != 0 {
		t.Fatal("closed stream kept its slot")
	}
}

func TestSecretsStayOutOfErrorsAndStats(t *testing.T) {
	secrets := []string{"sk-live-0000000000000000aaaa", "sk-live-0000000000000000bbbb"}
	keys := []Key{{Secret: secrets[0], BaseURL: closedURL(t)}, {Secret: secrets[1], BaseURL: closedURL(t)}}
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	tr, p, _ := newTestTransport(t, keys, base, []Option{WithMaxWait(time.Millisecond)})
	_, err := post(t, tr, "http://127.0.0.1:1", chatBody)
	var out bytes.Buffer
	fmt.Fprintf(&out, "%v\n%+v\n%#v\n%v\n%+v\n", err, err, p.Stats(), keys, keys)
	for _, s := range secrets {
		if strings.Contains(out.String(), s) || strings.Contains(out.String(), s[8:]) {
			t.Errorf("secret %s… appears in:\n%s", s[:8], out.String())
		}
	}
}

func TestLargeErrorBodyIsReturnedWhole(t *testing.T) {
	big := `{"error":{"message":"` + strings.Repeat("x", 100_000) + `"}}`
	s := &scripted{script: map[string][]func(http.ResponseWriter){"sk-a": {status(400, big)}}}
	upstream := httptest.NewServer(s)
	defer upstream.Close()
	tr, _, _ := newTestTransport(t, keysOf("sk-a"), upstream.Client().Transport, nil)
	resp, err := post(t, tr, upstream.URL, chatBody)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); body != big {
		t.Errorf("a 400 with a %d-byte body reached the caller as %d bytes", len(big), len(body))
	}
}

func (s *scripted) seenCopy() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}
