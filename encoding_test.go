package keypool

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func gzipped(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	io.WriteString(zw, s)
	zw.Close()
	return b.Bytes()
}

func gunzip(t *testing.T, b []byte) string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	return string(out)
}

// postGzip posts with the caller's own Accept-Encoding, so Go's transport
// does not decompress.
func postGzip(t *testing.T, rt http.RoundTripper, url, body string) (*http.Response, error) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Accept-Encoding", "gzip")
	return rt.RoundTrip(req)
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
	tr, p, _ := newTestTransport(t, keysOf("sk-a", "sk-b"), srv.Client().Transport, nil, WithFirstTokenTimeout(time.Hour))
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

// A kept error answer keeps its encoding with its body, and a compressed
// error body is still understood.
func TestGzippedErrorsAreKeptAndUnderstood(t *testing.T) {
	rateLimited := `{"error":{"message":"slow down","code":"rate_limit_exceeded"}}`
	quota := `{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := rateLimited
		if r.Header.Get("Authorization") == "Bearer sk-broke" {
			body = quota
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Retry-After", "60")
		w.WriteHeader(429)
		w.Write(gzipped(t, body))
	}))
	defer srv.Close()

	tr, _, _ := newTestTransport(t, keysOf("sk-a"), srv.Client().Transport, []Option{WithMaxWait(time.Second)})
	resp, err := postGzip(t, tr, srv.URL, chatBody)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Content-Encoding") != "gzip" || gunzip(t, raw) != rateLimited {
		t.Errorf("kept answer: %d, Content-Encoding %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Encoding"), len(raw))
	}

	tr2, p2, _ := newTestTransport(t, []Key{{Secret: "sk-broke", Account: "acct"}}, srv.Client().Transport, []Option{WithMaxWait(time.Second)})
	resp, err = postGzip(t, tr2, srv.URL, chatBody)
	if err == nil {
		resp.Body.Close()
	}
	if st := p2.Stats()[0]; st.State != StateDisabled {
		t.Errorf("a gzipped insufficient_quota left the account %v, want disabled", st.State)
	}
}

// sseUpstream serves a fixed stream with the given content type, then
// stalls until the request ends, so that only what is sent can be read.
func sseUpstream(t *testing.T, contentType, stream string) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", contentType)
		io.WriteString(w, stream)
		w.(http.Flusher).Flush()
		select {
		case <-stop:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(stop); srv.Close() })
	return srv, &hits
}

// readPrefix reads exactly len(want) bytes of body.
func readPrefix(t *testing.T, body io.Reader, n int) string {
	t.Helper()
	buf := make([]byte, n)
	if _, err := io.ReadFull(body, buf); err != nil {
		t.Fatalf("reading the first %d bytes: %v", n, err)
	}
	return string(buf)
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
			tr, p, _ := newTestTransport(t, keysOf("sk-a"), srv.Client().Transport, nil, WithFirstTokenTimeout(time.Hour))
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
	tr, _, c := newTestTransport(t, []Key{{Secret: "sk-queued", Weight: 1000}, {Secret: "sk-live", BaseURL: live.URL}},
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
