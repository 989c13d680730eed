package keypool

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	openai "github.com/sashabaranov/go-openai"
)

// stallingUpstream answers 200 with a body that starts with prefix and
// then stalls until the test ends; started is signalled once the prefix
// is on the wire.
func stallingUpstream(t *testing.T, contentType, prefix string) (*httptest.Server, *atomic.Int32, chan struct{}) {
	t.Helper()
	var hits atomic.Int32
	started := make(chan struct{}, 16)
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(200)
		io.WriteString(w, prefix)
		w.(http.Flusher).Flush()
		started <- struct{}{}
		select {
		case <-stop:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(stop); srv.Close() })
	return srv, &hits, started
}

// A caller that gives up while keypool waits for the first byte of
// content is not the key's fault: no retry, no failure, slot released.
func TestCallerCancelWhileAwaitingContentBlamesNoKey(t *testing.T) {
	for _, tc := range []struct{ name, contentType, prefix string }{
		{"json with blank lines", "application/json", "\n\n"},
		{"stream with keep-alives", "text/event-stream", ": keep-alive\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, hits, started := stallingUpstream(t, tc.contentType, tc.prefix)
			tr, p, _ := newTestTransport(t, keysOf("sk-a", "sk-b"), srv.Client().Transport, nil, WithFirstTokenTimeout(time.Hour))
			proveAll(p)
			for i := range 6 {
				ctx, cancel := context.WithCancel(context.Background())
				go func() { <-started; cancel() }()
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(chatBody))
				resp, err := tr.RoundTrip(req)
				if resp != nil {
					resp.Body.Close()
				}
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("request %d: err = %v, want context.Canceled", i, err)
				}
				if got := hits.Load(); got != int32(i+1) {
					t.Fatalf("request %d: the upstream saw %d requests; a cancelled request was retried", i, got)
				}
			}
			for _, st := range p.Stats() {
				if st.Failures != 0 || st.State != StateReady || st.InFlight != 0 {
					t.Errorf("%s: %d failures, state %v, %d in flight after caller cancels", st.Name, st.Failures, st.State, st.InFlight)
				}
			}
		})
	}
}

// No attempt starts once the caller's context is done.
func TestNoAttemptAfterContextDone(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	tr, p, _ := newTestTransport(t, keysOf("sk-a"), srv.Client().Transport, nil)
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

type failingReader struct{ err error }

func (f failingReader) Read([]byte) (int, error) { return 0, f.err }

// A body that cannot be read or replayed fails the request at once and
// costs no key anything.
func TestBrokenRequestBodyFailsAtOnceAndBlamesNoKey(t *testing.T) {
	var s *scripted
	var upstream *httptest.Server
	// newPair starts an upstream whose key sk-a answers 503 once, and a
	// pool of sk-a (picked first) and sk-b.
	newPair := func() (*Transport, *Pool) {
		s = &scripted{script: map[string][]func(http.ResponseWriter){"sk-a": {status(503, `{}`)}}}
		upstream = httptest.NewServer(s)
		t.Cleanup(upstream.Close)
		tr, p, _ := newTestTransport(t, []Key{{Secret: "sk-a", Weight: 1000}, {Secret: "sk-b"}}, upstream.Client().Transport, nil)
		proveAll(p)
		return tr, p
	}
	noFailures := func(p *Pool) {
		t.Helper()
		for _, st := range p.Stats() {
			if st.Failures != 0 || st.State != StateReady {
				t.Errorf("%s: %d failures, %v", st.Name, st.Failures, st.State)
			}
		}
	}

	t.Run("short body without GetBody", func(t *testing.T) {
		tr, p := newPair()
		req, _ := http.NewRequest(http.MethodPost, upstream.URL+"/v1/chat/completions", nil)
		req.Body = io.NopCloser(strings.NewReader("1234567"))
		req.ContentLength = 100
		_, err := tr.RoundTrip(req)
		if !errors.Is(err, ErrRequestBody) || !strings.Contains(err.Error(), "100") {
			t.Errorf("err = %v, want ErrRequestBody naming the length", err)
		}
		if n := len(s.seenCopy()); n != 0 {
			t.Errorf("the upstream saw %d requests", n)
		}
		noFailures(p)
	})

	t.Run("body read error with GetBody", func(t *testing.T) {
		tr, p := newPair()
		cause := errors.New("disk on fire")
		req, _ := http.NewRequest(http.MethodPost, upstream.URL+"/v1/chat/completions", nil)
		req.Body = io.NopCloser(io.MultiReader(strings.NewReader("{"), failingReader{cause}))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(failingReader{cause}), nil }
		req.ContentLength = 50
		_, err := tr.RoundTrip(req)
		if !errors.Is(err, cause) || !errors.Is(err, ErrRequestBody) {
			t.Errorf("err = %v, want ErrRequestBody wrapping the cause", err)
		}
		noFailures(p)
	})

	t.Run("GetBody fails on the retry", func(t *testing.T) {
		tr, p := newPair()
		cause := errors.New("cannot rewind")
		req, _ := http.NewRequest(http.MethodPost, upstream.URL+"/v1/chat/completions", strings.NewReader(chatBody))
		req.GetBody = func() (io.ReadCloser, error) { return nil, cause }
		_, err := tr.RoundTrip(req)
		if !errors.Is(err, cause) || !errors.Is(err, ErrRequestBody) {
			t.Errorf("err = %v, want ErrRequestBody wrapping GetBody's error", err)
		}
		if n := len(s.seenCopy()); n != 1 {
			t.Errorf("the upstream saw %d requests, want the one 503", n)
		}
		if st := p.Stats(); st[0].Failures != 1 || st[1].Failures != 0 {
			t.Errorf("failures %d and %d, want 1 (the real 503) and 0", st[0].Failures, st[1].Failures)
		}
	})
}

// A nil URL is an error, as with http.Transport, not a panic.
func TestNilURLIsAnError(t *testing.T) {
	tr, _, _ := newTestTransport(t, keysOf("sk-a"), http.DefaultTransport, nil)
	closed := &closeRecorder{Reader: strings.NewReader("x")}
	_, err := tr.RoundTrip(&http.Request{Method: "POST", Header: http.Header{}, Body: closed})
	if err == nil || !strings.Contains(err.Error(), "nil Request.URL") {
		t.Errorf("err = %v", err)
	}
	if !closed.closed {
		t.Error("the body of a refused request was not closed")
	}
}

// A classifier that asks for a backoff after a transport error, when the
// backoff says Stop, still gets an AttemptsError with a reason.
func TestGivingUpAfterBackoffStopHasAReason(t *testing.T) {
	tr, _, _ := newTestTransport(t, keysOf("sk-a"), &http.Transport{}, nil,
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

// Errors caused by a deadline are timeouts, as net/http's are.
func TestDeadlineErrorsAreTimeouts(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	tr, p, _ := newTestTransport(t, []Key{{Secret: "sk-a", MaxConcurrent: 1}}, srv.Client().Transport, nil)
	proveAll(p)
	check := func(what string, err error) {
		t.Helper()
		var ne net.Error
		if !os.IsTimeout(err) || !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: err = %v (%T): os.IsTimeout %v, want a timeout wrapping context.DeadlineExceeded", what, err, err, os.IsTimeout(err))
		}
	}
	// Already expired: no attempt.
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader(chatBody))
	_, err := tr.RoundTrip(req)
	check("expired before the call", err)

	// Expires during the attempt.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	req, _ = http.NewRequestWithContext(ctx2, http.MethodPost, srv.URL, strings.NewReader(chatBody))
	_, err = tr.RoundTrip(req)
	check("expired during the attempt", err)

	// Expires while waiting for a key.
	go func() {
		resp, err := post(t, tr, srv.URL, chatBody)
		if err == nil {
			resp.Body.Close()
		}
	}()
	waitFor(t, func() bool { return p.Stats()[0].InFlight == 1 })
	ctx3, cancel3 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel3()
	req, _ = http.NewRequestWithContext(ctx3, http.MethodPost, srv.URL, strings.NewReader(chatBody))
	_, err = tr.RoundTrip(req)
	check("expired while waiting", err)

	// Through go-openai, which wraps what the http.Client returns.
	cfg := openai.DefaultConfig("placeholder")
	cfg.BaseURL = srv.URL + "/v1"
	cfg.HTTPClient = &http.Client{Transport: tr}
	ctx4, cancel4 := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel4()
	_, err = openai.NewClientWithConfig(cfg).GetModel(ctx4, "m")
	check("go-openai GetModel", err)
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
	tr, p, clock := newTestTransport(t, keysOf("sk-a"), upstream.Client().Transport, []Option{WithAdaptiveLimits(false)})
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
