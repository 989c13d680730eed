package keypool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	oai "github.com/openai/openai-go/v3"
	oaiopt "github.com/openai/openai-go/v3/option"

	"github.com/cenkalti/backoff/v4"
	"github.com/keypool/keypool/internal/fakeupstream"
)

func TestSuccessReplacesAuthAndLeavesRequestAlone(t *testing.T) {
	var gotAuth []string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = append(gotAuth, r.Header.Get("Authorization")+"|"+r.Header.Get("Api-Key")+"|"+r.Header.Get("X-Api-Key"))
		io.WriteString(w, `{"ok":true}`)
	}))
	defer upstream.Close()
	tr, p, _ := newFakeClockTransport(t, keysOf("sk-one"), upstream.Client().Transport, nil)

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

func TestDialErrorFailsOver(t *testing.T) {
	sim := startLoopbackSim(t, fakeupstream.Config{Keys: simKeys(nil, "sk-dead", "sk-live")})
	keys := []Key{{Secret: "sk-dead", BaseURL: closedURL(t), Weight: 100}, {Secret: "sk-live"}}
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	tr, p, _ := newFakeClockTransport(t, keys, base, nil)
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
	tr, _, _ := newFakeClockTransport(t, keys, base, []Option{WithMaxWait(50 * time.Millisecond)}, WithMaxAttempts(2))
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
	sim := startLoopbackSim(t, fakeupstream.Config{
		Keys:    map[string]fakeupstream.Key{"sk-a": {Account: "down"}, "sk-b": {}},
		Outages: []fakeupstream.Outage{{Account: "down", Start: 0, End: time.Hour}},
	})
	keys := []Key{{Secret: "sk-a", Weight: 1000}, {Secret: "sk-b"}}
	tr, p, _ := newFakeClockTransport(t, keys, sim.Client().Transport, nil)
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

// A response keypool hands back after spending its own attempts tells
// the client not to retry it: openai-go's own retries do not multiply
// keypool's.
func TestClientRetriesDoNotMultiply(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(503)
		io.WriteString(w, `{"error":{"message":"overloaded","type":"server_error"}}`)
	}))
	defer srv.Close()
	tr, _, _ := newFakeClockTransport(t, keysOf("sk-a", "sk-b"), srv.Client().Transport, nil, WithRetryBudget(1e9, 0))
	client := oai.NewClient(oaiopt.WithBaseURL(srv.URL+"/v1/"), oaiopt.WithAPIKey("placeholder"),
		oaiopt.WithHTTPClient(&http.Client{Transport: tr})) // openai-go's default retries left on
	_, err := client.Chat.Completions.New(context.Background(), oai.ChatCompletionNewParams{
		Model: "deepseek-chat", Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("hi")},
	})
	if err == nil {
		t.Fatal("want the 503")
	}
	if n := hits.Load(); n != 5 {
		t.Errorf("one call made %d upstream requests, want keypool's 5", n)
	}
}

// No attempt starts once the caller's context is done.
func TestNoAttemptAfterContextDone(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	tr, p, _ := newFakeClockTransport(t, keysOf("sk-a"), srv.Client().Transport, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader(chatBody))
	if _, err := tr.RoundTrip(req); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if hits.Load() != 0 || p.Stats()[0].Requests != 0 {
		t.Errorf("an attempt was made after the context was done")
	}
}

// A nil URL is an error, as with http.Transport, not a panic.
func TestNilURLIsAnError(t *testing.T) {
	tr, _, _ := newFakeClockTransport(t, keysOf("sk-a"), http.DefaultTransport, nil)
	closed := &closeRecorder{Reader: strings.NewReader("x")}
	_, err := tr.RoundTrip(&http.Request{Method: "POST", Header: http.Header{}, Body: closed})
	if !errors.Is(err, ErrInvalidRequest) || !strings.Contains(err.Error(), "nil Request.URL") {
		t.Errorf("err = %v", err)
	}
	if !closed.closed {
		t.Error("the body of a refused request was not closed")
	}
}

// A classifier that asks for a backoff after a transport error, when the
// backoff says Stop, still gets an AttemptsError with a reason.
func TestGivingUpAfterBackoffStopHasAReason(t *testing.T) {
	tr, _, _ := newFakeClockTransport(t, keysOf("sk-a"), &http.Transport{}, nil,
		WithBackoff(func() backoff.BackOff { return &backoff.StopBackOff{} }),
		WithClassifier(func(resp *http.Response, err error, def Outcome) Outcome {
			return Outcome{Effect: EffectFailure, Retry: RetryBackoff}
		}))
	_, err := post(t, tr, closedURL(t), chatBody)
	var ae *AttemptsError
	if !errors.As(err, &ae) || ae.Err == nil {
		t.Fatalf("err = %#v, want an *AttemptsError with a non-nil Err", err)
	}
	var opErr *net.OpError
	if !errors.As(err, &opErr) {
		t.Errorf("err = %v does not lead to the dial error", err)
	}
}

// WithMaxWait bounds the total time a request waits for keys, not each
// wait: a key that answers 429 forever gets its 429 back within it.
func TestMaxWaitBoundsTheWholeRequest(t *testing.T) {
	s := &scripted{script: map[string][]func(http.ResponseWriter){}}
	for range 100 {
		s.script["sk-a"] = append(s.script["sk-a"], status(429, `{"error":{"message":"slow down"}}`))
	}
	upstream := httptest.NewServer(s)
	defer upstream.Close()
	tr, p, clock := newFakeClockTransport(t, keysOf("sk-a"), upstream.Client().Transport, []Option{WithAdaptiveLimits(false)})
	proveAll(p)
	start := clock.Now()
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := post(t, tr, upstream.URL, chatBody)
		done <- result{resp, err}
	}()
	for {
		select {
		case r := <-done:
			if r.err != nil {
				t.Fatalf("err = %v, want the upstream's 429", r.err)
			}
			if body := readAll(t, r.resp); r.resp.StatusCode != 429 || !strings.Contains(body, "slow down") {
				t.Errorf("got %d %q", r.resp.StatusCode, body)
			}
			if waited := clock.Now().Sub(start); waited > time.Minute {
				t.Errorf("the request waited %v of fake time, more than WithMaxWait's minute", waited)
			}
			return
		case <-time.After(time.Millisecond):
			clock.Advance(100 * time.Millisecond)
			if clock.Now().Sub(start) > 10*time.Minute {
				t.Fatal("the request never returned")
			}
		}
	}
}

// WithMaxAttempts(math.MaxInt) means as many attempts as WithMaxWait
// allows: the ceiling on attempts does not overflow.
func TestHugeMaxAttempts(t *testing.T) {
	s := &scripted{script: map[string][]func(http.ResponseWriter){"sk-a": {status(503, `{}`)}}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	tr, p, _ := newFakeClockTransport(t, []Key{{Secret: "sk-a", Weight: 1000}, {Secret: "sk-b"}}, srv.Client().Transport, nil,
		WithMaxAttempts(math.MaxInt))
	proveAll(p)
	resp, err := post(t, tr, srv.URL, chatBody)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Errorf("got %d after %d attempt(s); a 503 with another key free was not retried", resp.StatusCode, len(s.seenCopy()))
	}
}

// 429s are not charged to WithMaxAttempts, but they stop at the ceiling
// the package documentation states, four times WithMaxAttempts
// attempts in all (attemptsCeiling): a key that
// answers 429 for ever, each time with a retry hint of a millisecond,
// gets exactly that many, and the caller gets the last 429.
func TestRateLimitedAttemptsStopAtTheCeiling(t *testing.T) {
	inVirtualTime(t, testRateLimitedAttemptsStopAtTheCeiling)
}

func testRateLimitedAttemptsStopAtTheCeiling(t *testing.T) {
	const maxAttempts = 3
	var sent atomic.Int32
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		io.Copy(io.Discard, req.Body)
		n := sent.Add(1)
		return jsonAnswer(429, fmt.Sprintf(`{"error":{"message":"slow down, #%d"}}`, n), "Retry-After", "0", "Retry-After-Ms", "1"), nil
	})
	p := newRealClockPool(t, keysOf("sk-a"))
	proveAll(p)
	tr := NewTransport(p, WithBase(base), WithMaxAttempts(maxAttempts),
		WithBackoff(func() backoff.BackOff { return &backoff.ZeroBackOff{} }))
	status, body, err := postTo(t, tr, "application/json", chatBody)
	if err != nil {
		t.Fatalf("err = %v, want the last 429", err)
	}
	const want = 4 * maxAttempts
	if n := int(sent.Load()); n != want {
		t.Errorf("%d attempts, want %d (4 × WithMaxAttempts %d)", n, want, maxAttempts)
	}
	if wantBody := fmt.Sprintf("#%d\"", want); status != 429 || !strings.Contains(body, wantBody) {
		t.Errorf("got %d %q, want the last 429 (%s)", status, body, wantBody)
	}
}
