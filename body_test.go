package keypool

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestBodyReplay(t *testing.T) {
	s := &scripted{script: map[string][]func(http.ResponseWriter){
		"sk-a": {status(500, `{}`)},
	}}
	upstream := httptest.NewServer(s)
	defer upstream.Close()
	tr, p, _ := newFakeClockTransport(t, []Key{{Secret: "sk-a", Weight: 1000}, {Secret: "sk-b"}}, upstream.Client().Transport, nil)
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
		tr, p, _ := newFakeClockTransport(t, []Key{{Secret: "sk-a", Weight: 1000}, {Secret: "sk-b"}}, upstream.Client().Transport, nil)
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

// A ContentLength with no body, or a GetBody that returns none, is the
// caller's fault: ErrRequestBody, and no key charged.
func TestContentLengthWithoutBodyIsTheCallers(t *testing.T) {
	t.Run("nil Body", func(t *testing.T) {
		var hits atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
		defer srv.Close()
		tr, p, _ := newFakeClockTransport(t, keysOf("sk-a", "sk-b"), srv.Client().Transport, nil)
		proveAll(p)
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", nil)
		req.ContentLength = 10 // a hand-built request whose body was forgotten
		_, err := tr.RoundTrip(req)
		if !errors.Is(err, ErrRequestBody) {
			t.Errorf("err = %v, want ErrRequestBody", err)
		}
		for _, st := range p.Stats() {
			if st.Failures != 0 || st.State != StateReady {
				t.Errorf("%s: %d failures, state %v, for the caller's ContentLength", st.Name, st.Failures, st.State)
			}
		}
	})
	t.Run("GetBody returns a nil body", func(t *testing.T) {
		s := &scripted{script: map[string][]func(http.ResponseWriter){"sk-a": {status(503, `{}`)}}}
		srv := httptest.NewServer(s)
		defer srv.Close()
		tr, p, _ := newFakeClockTransport(t, []Key{{Secret: "sk-a", Weight: 1000}, {Secret: "sk-b"}}, srv.Client().Transport, nil)
		proveAll(p)
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(chatBody))
		req.GetBody = func() (io.ReadCloser, error) { return nil, nil }
		resp, err := tr.RoundTrip(req)
		if resp != nil {
			readAll(t, resp)
			t.Errorf("got the kept %d answer, want ErrRequestBody", resp.StatusCode)
		} else if !errors.Is(err, ErrRequestBody) {
			t.Errorf("err = %v, want ErrRequestBody", err)
		}
		if st := p.Stats(); st[1].Failures != 0 {
			t.Errorf("sk-b: %d failures for the caller's GetBody", st[1].Failures)
		}
	})
}

// A body without GetBody is read before the first attempt, and that
// read ends with the request's context, as net/http's does.
func TestBodyReadHonoursContext(t *testing.T) {
	tr, _, _ := newFakeClockTransport(t, keysOf("sk-a"), roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return nil, errors.New("never reached")
	}), nil)
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://api.example/v1/chat/completions", pr)
	done := make(chan error, 1)
	go func() {
		_, err := tr.RoundTrip(req)
		done <- err
	}()
	if _, err := pw.Write([]byte(`{"model":"m",`)); err != nil { // returns once keypool has read it
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second): // a hang, not a latency bound
		t.Error("RoundTrip still blocked reading the request body 5 s after its context was cancelled")
		pw.CloseWithError(errors.New("test gives up"))
		<-done
	}
}
