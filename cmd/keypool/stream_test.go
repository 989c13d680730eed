package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/fakeupstream"
)

// gatedStream is an upstream whose streams send one event, then wait for
// the test before each next one; a stream ends after three events and
// [DONE]. Each stream reports when its request is cancelled.
type gatedStream struct {
	*httptest.Server
	next      chan struct{} // one receive per event after the first
	cancelled chan struct{} // one send per stream whose client went away
}

func startGatedStream(t *testing.T) *gatedStream {
	g := &gatedStream{next: make(chan struct{}), cancelled: make(chan struct{}, 8)}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if !strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"object":"chat.completion","choices":[{"message":{"content":"plain"}}]}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			if i > 0 {
				select {
				case <-g.next:
				case <-r.Context().Done():
					g.cancelled <- struct{}{}
					return
				}
			}
			fmt.Fprintf(w, "data: {\"n\":%d}\n\n", i)
			w.(http.Flusher).Flush()
		}
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(g.Close)
	return g
}

var sseHeader = http.Header{"Accept": {"text/event-stream"}}

// receive waits for the next data line, failing after a generous bound:
// the events are gated, so arriving at all shows they were flushed.
func receive(t *testing.T, events <-chan string) string {
	t.Helper()
	select {
	case e, ok := <-events:
		if !ok {
			t.Fatal("stream ended early")
		}
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s: the proxy holds events back")
		return ""
	}
}

func TestStreamEventsArriveBeforeStreamEnds(t *testing.T) {
	up := startGatedStream(t)
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keyA, "KEYPOOL_UPSTREAM": up.URL, "KEYPOOL_TOKENS": token})
	resp := p.do(t, "POST", "/v1/chat/completions", streamBody, sseHeader)
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	events := sseData(resp.Body)
	// Each event must reach the client while the upstream still waits to
	// send the next one.
	for i := range 3 {
		if got, want := receive(t, events), fmt.Sprintf(`{"n":%d}`, i); got != want {
			t.Fatalf("event %d = %s, want %s", i, got, want)
		}
		if i < 2 {
			up.next <- struct{}{}
		}
	}
	if got := receive(t, events); got != "[DONE]" {
		t.Fatalf("last event %q", got)
	}
	waitFor(t, 5*time.Second, "the slot to be free after the stream", func() bool { return p.inFlight() == 0 })
}

func TestStreamFromSimulator(t *testing.T) {
	sim := startSim(t, fakeupstream.Config{Keys: simKeys(keyA), StreamChunks: 5, StreamKeepAlives: 2})
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keyA, "KEYPOOL_UPSTREAM": sim.URL, "KEYPOOL_TOKENS": token})
	status, body := p.chat(t, `{"model":"deepseek-chat","stream":true,"stream_options":{"include_usage":true}}`)
	if status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	var content strings.Builder
	for _, line := range strings.Split(body, "\n") {
		if _, after, ok := strings.Cut(line, `"content":"`); ok {
			content.WriteString(after[:strings.IndexByte(after, '"')])
		}
	}
	if content.String() != "tok0 tok1 tok2 tok3 tok4 " || !strings.Contains(body, ": keep-alive") || !strings.HasSuffix(body, "data: [DONE]\n\n") {
		t.Errorf("stream content %q; body %q", content.String(), body)
	}
	if st := p.pool.Stats()[0]; st.Tokens == 0 || st.Successes != 1 {
		t.Errorf("Stats %+v: want the stream's usage counted", st)
	}
}

func TestClientDisconnectFreesSlot(t *testing.T) {
	up := startGatedStream(t)
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keyA + ";max=1", "KEYPOOL_UPSTREAM": up.URL, "KEYPOOL_TOKENS": token})
	// Prove the key first: a key that has never answered takes one
	// request at a time anyway.
	if status, body := p.chat(t, chatBody); status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", p.URL+"/v1/chat/completions", strings.NewReader(streamBody))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	events := sseData(resp.Body)
	receive(t, events)
	if n := p.inFlight(); n != 1 {
		t.Fatalf("%d requests in flight during the stream, want 1", n)
	}
	cancel() // the client goes away mid-stream
	resp.Body.Close()
	for range events {
	}
	select {
	case <-up.cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream request was not cancelled")
	}
	waitFor(t, 10*time.Second, "the key's slot to be freed", func() bool { return p.inFlight() == 0 })
	// The only slot (max=1) serves the next request at once.
	if status, body := p.chat(t, chatBody); status != 200 {
		t.Fatalf("after the disconnect: status %d: %s", status, body)
	}
	if !strings.Contains(p.logs.String(), `"aborted":true`) && !strings.Contains(p.logs.String(), `"status":499`) {
		t.Errorf("the access log does not show the abandoned stream:\n%s", p.logs.String())
	}
}
