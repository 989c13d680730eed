package keypool

import (
	"context"
	"errors"
	"io"
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

func TestQueuedStreamFailsOverAfterFirstTokenTimeout(t *testing.T) {
	inVirtualTime(t, testQueuedStreamFailsOverAfterFirstTokenTimeout)
}

func testQueuedStreamFailsOverAfterFirstTokenTimeout(t *testing.T) {
	sim := startInMemorySim(t, fakeupstream.Config{
		Keys: map[string]fakeupstream.Key{
			"sk-queued": {QueueFor: time.Hour}, // keep-alives only
			"sk-live":   {},
		},
		StreamChunks: 3,
	})
	tr := NewTransport(newRealClockPool(t, []Key{{Secret: "sk-queued", Weight: 1000}, {Secret: "sk-live"}}),
		WithBase(sim.Client().Transport), WithFirstTokenTimeout(150*time.Millisecond))
	start := time.Now()
	resp, err := post(t, tr, sim.URL, `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if !strings.HasPrefix(body, "data: ") || !strings.Contains(body, "[DONE]") {
		t.Errorf("caller got %q, want the live key's stream from its first data line", body)
	}
	if sim.Counters("sk-queued").Requests != 1 || sim.Counters("sk-live").OK != 1 {
		t.Errorf("queued key got %d requests, live key %d answers", sim.Counters("sk-queued").Requests, sim.Counters("sk-live").OK)
	}
	if waited := time.Since(start); waited < 150*time.Millisecond {
		t.Errorf("failed over after %v, before the timeout", waited)
	}
}

func TestStreamWithinFirstTokenTimeoutIsKept(t *testing.T) {
	inVirtualTime(t, testStreamWithinFirstTokenTimeoutIsKept)
}

func testStreamWithinFirstTokenTimeoutIsKept(t *testing.T) {
	sim := startInMemorySim(t, fakeupstream.Config{
		Keys:         map[string]fakeupstream.Key{"sk-slow": {QueueFor: 60 * time.Millisecond}},
		StreamChunks: 2,
	})
	tr := NewTransport(newRealClockPool(t, keysOf("sk-slow")), WithBase(sim.Client().Transport), WithFirstTokenTimeout(2*time.Second))
	resp, err := post(t, tr, sim.URL, `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); !strings.Contains(body, "tok1") || sim.Total().Requests != 1 {
		t.Errorf("body %q after %d requests", body, sim.Total().Requests)
	}
}

func TestWhitespaceOnlyAnswerIsRetried(t *testing.T) {
	inVirtualTime(t, testWhitespaceOnlyAnswerIsRetried)
}

func testWhitespaceOnlyAnswerIsRetried(t *testing.T) {
	sim := startInMemorySim(t, fakeupstream.Config{Keys: map[string]fakeupstream.Key{
		"sk-empty": {EmptyAnswers: true}, "sk-good": {},
	}})
	p := newRealClockPool(t, []Key{{Secret: "sk-empty", Weight: 1000}, {Secret: "sk-good"}})
	tr := NewTransport(p, WithBase(sim.Client().Transport))
	resp, err := post(t, tr, sim.URL, chatBody)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); !strings.Contains(body, "chat.completion") {
		t.Errorf("caller got %q", body)
	}
	if sim.Counters("sk-empty").Requests != 1 || p.Stats()[0].Failures != 1 {
		t.Errorf("empty-answer key: %d requests, %d failures", sim.Counters("sk-empty").Requests, p.Stats()[0].Failures)
	}

	// Every key answers empty: the caller gets an error that says so.
	p2 := newRealClockPool(t, keysOf("sk-empty"), WithMaxWait(10*time.Millisecond))
	_, err = post(t, NewTransport(p2, WithBase(sim.Client().Transport), WithMaxAttempts(2)), sim.URL, chatBody)
	if !errors.Is(err, ErrEmptyAnswer) {
		t.Errorf("err = %v, want ErrEmptyAnswer", err)
	}
}

// A compressed stream is passed through as sent; inspection stands aside.
func TestGzippedStreamPassesThrough(t *testing.T) {
	stream := ": keep-alive\n\ndata: {\"choices\":[]}\n\ndata: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n"
	wire := gzipped(t, stream)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Content-Encoding", "gzip")
		w.Write(wire)
	}))
	defer srv.Close()
	tr, p, _ := newFakeClockTransport(t, keysOf("sk-a", "sk-b"), srv.Client().Transport, nil, WithFirstTokenTimeout(time.Hour))
	resp, err := postGzip(t, tr, srv.URL, `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, resp)
	if got != string(wire) || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Errorf("caller got %d bytes (Content-Encoding %q), want the %d gzip bytes as sent", len(got), resp.Header.Get("Content-Encoding"), len(wire))
	}
	if hits.Load() != 1 {
		t.Errorf("%d upstream requests, want 1", hits.Load())
	}
	for _, st := range p.Stats() {
		if st.Failures != 0 {
			t.Errorf("%s blamed for an encoding: %d failures", st.Name, st.Failures)
		}
	}
}

// The look-ahead for a stream's first data line never drops, cuts or
// reorders bytes, and finds the line whatever its line endings and
// however the content type is spelled.
func TestStreamLookAheadKeepsEveryByte(t *testing.T) {
	longComment := ": " + strings.Repeat("x", 20<<10) + "\n\n"
	for _, tc := range []struct{ name, contentType, stream string }{
		{"long comment", "text/event-stream", longComment + "data: {\"a\":1}\n\n"},
		{"many comments", "text/event-stream", strings.Repeat(": keep-alive\n\n", 2000) + "data: {\"a\":1}\n\n"},
		{"CR line endings", "text/event-stream", ": ping\r\rdata: {\"a\":1}\r\r"},
		{"CRLF line endings", "text/event-stream", ": ping\r\n\r\ndata: {\"a\":1}\r\n\r\n"},
		{"byte order mark", "text/event-stream", "\ufeffdata: {\"a\":1}\n\n"},
		{"media type case", "Text/Event-Stream; charset=UTF-8", ": ping\n\ndata: {\"a\":1}\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, hits := sseUpstream(t, tc.contentType, tc.stream)
			tr, p, _ := newFakeClockTransport(t, keysOf("sk-a"), srv.Client().Transport, nil, WithFirstTokenTimeout(time.Hour))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m","stream":true}`))
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatalf("the stream was not handed over once its data line arrived: %v", err)
			}
			defer resp.Body.Close()
			if got := readPrefix(t, resp.Body, len(tc.stream)); got != tc.stream {
				t.Errorf("caller read %d bytes that differ from the %d sent", len(got), len(tc.stream))
			}
			if hits.Load() != 1 || p.Stats()[0].Failures != 0 {
				t.Errorf("%d upstream requests, %d failures", hits.Load(), p.Stats()[0].Failures)
			}
		})
	}
}

// A stream whose content type is spelled in capitals is still a stream:
// one that only sends keep-alives fails over at the first-token timeout.
func TestQueuedStreamWithCapitalisedContentTypeFailsOver(t *testing.T) {
	srv, _ := sseUpstream(t, "Text/Event-Stream", ": keep-alive\n\n")
	live, _ := sseUpstream(t, "text/event-stream", "data: {\"a\":1}\n\n")
	tr, _, c := newFakeClockTransport(t, []Key{{Secret: "sk-queued", Weight: 1000}, {Secret: "sk-live", BaseURL: live.URL}},
		srv.Client().Transport, nil, WithFirstTokenTimeout(100*time.Millisecond))
	done := make(chan *http.Response, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m","stream":true}`))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	for {
		select {
		case resp := <-done:
			if resp == nil {
				return
			}
			defer resp.Body.Close()
			if got := readPrefix(t, resp.Body, 15); got != "data: {\"a\":1}\n\n" {
				t.Errorf("caller read %q, want the live key's stream", got)
			}
			return
		case <-time.After(5 * time.Millisecond):
			c.Advance(50 * time.Millisecond)
		}
	}
}

// The caller reads exactly the bytes the upstream sent, whatever they
// start with.
func TestAnswerBytesReachTheCallerUnchanged(t *testing.T) {
	for _, tc := range []struct{ name, contentType, body string }{
		{"json with leading new line", "application/json", "\n{\"a\":1}\n"},
		{"json with long leading white space", "application/json; charset=utf-8", strings.Repeat(" \r\n\t", 100) + `{"a":1}`},
		{"binary starting with white space bytes", "audio/mpeg", " \t\n\r\x00ID3\xff\xfb"},
		{"binary made only of white space bytes", "application/octet-stream", "\n\n \t\r"},
		{"no content type", "", "\n\nhello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, hits := fixedAnswer(t, 200, tc.contentType, tc.body)
			tr, p, _ := newFakeClockTransport(t, keysOf("sk-a", "sk-b"), srv.Client().Transport, nil)
			resp, err := post(t, tr, srv.URL, chatBody)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, resp); got != tc.body {
				t.Errorf("caller read %q, upstream sent %q", got, tc.body)
			}
			if resp.ContentLength != int64(len(tc.body)) {
				t.Errorf("ContentLength %d for a %d-byte body", resp.ContentLength, len(tc.body))
			}
			if *hits != 1 {
				t.Errorf("%d upstream requests, want 1", *hits)
			}
			for _, st := range p.Stats() {
				if st.Failures != 0 {
					t.Errorf("%s blamed: %d failures", st.Name, st.Failures)
				}
			}
		})
	}
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
			tr, p, _ := newFakeClockTransport(t, keysOf("sk-a", "sk-b"), srv.Client().Transport, nil, WithFirstTokenTimeout(time.Hour))
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

// stalledStream is a stream body that sends one keep-alive comment, then
// nothing until it is closed.
type stalledStream struct {
	sent   bool
	closed chan struct{}
	once   sync.Once
}

func (s *stalledStream) Read(p []byte) (int, error) {
	if !s.sent {
		s.sent = true
		return copy(p, ": keep-alive\n\n"), nil
	}
	<-s.closed
	return 0, errors.New("read on a closed stream")
}

func (s *stalledStream) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

// When every attempt's stream sends nothing but keep-alives past
// WithFirstTokenTimeout, the request's error says so: errors.Is(err,
// ErrFirstTokenTimeout), as the errors documentation promises.
func TestEveryStreamTimingOutIsErrFirstTokenTimeout(t *testing.T) {
	inVirtualTime(t, testEveryStreamTimingOutIsErrFirstTokenTimeout)
}

func testEveryStreamTimingOutIsErrFirstTokenTimeout(t *testing.T) {
	var sent atomic.Int32
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		io.Copy(io.Discard, req.Body)
		sent.Add(1)
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}},
			Body: &stalledStream{closed: make(chan struct{})}, ContentLength: -1, Request: req}, nil
	})
	p := newRealClockPool(t, keysOf("sk-a", "sk-b"))
	tr := NewTransport(p, WithBase(base), WithFirstTokenTimeout(time.Second), WithMaxAttempts(2),
		WithBackoff(func() backoff.BackOff { return &backoff.ZeroBackOff{} }))
	resp, err := post(t, tr, "http://api.example.test", `{"model":"m","stream":true}`)
	if err == nil {
		readAll(t, resp)
		t.Fatalf("got %d after %d attempts, want an error", resp.StatusCode, sent.Load())
	}
	if !errors.Is(err, ErrFirstTokenTimeout) {
		t.Errorf("err = %v (after %d attempts), want one matching ErrFirstTokenTimeout", err, sent.Load())
	}
	t.Logf("%d attempts: %v", sent.Load(), err)
	if sent.Load() < 2 {
		t.Errorf("%d attempt(s), want the stream tried on both keys", sent.Load())
	}
}
