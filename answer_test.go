package keypool

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/keypool/keypool/internal/fakeupstream"
)

func TestLastUpstreamResponseIsReturnedWhole(t *testing.T) {
	sim := startLoopbackSim(t, fakeupstream.Config{Keys: simKeys(map[string]fakeupstream.Fault{
		"sk-a": fakeupstream.FaultRevoked, "sk-b": fakeupstream.FaultRevoked,
	}, "sk-a", "sk-b")})
	tr, _, _ := newFakeClockTransport(t, keysOf("sk-a", "sk-b"), sim.Client().Transport, []Option{WithMaxWait(10 * time.Millisecond)})
	resp, err := post(t, tr, sim.URL, chatBody)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != 401 || !strings.Contains(body, "invalid_api_key") {
		t.Errorf("got %d %q, want the upstream's 401", resp.StatusCode, body)
	}
}

func TestLargeErrorBodyIsReturnedWhole(t *testing.T) {
	big := `{"error":{"message":"` + strings.Repeat("x", 100_000) + `"}}`
	s := &scripted{script: map[string][]func(http.ResponseWriter){"sk-a": {status(400, big)}}}
	upstream := httptest.NewServer(s)
	defer upstream.Close()
	tr, _, _ := newFakeClockTransport(t, keysOf("sk-a"), upstream.Client().Transport, nil)
	resp, err := post(t, tr, upstream.URL, chatBody)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); body != big {
		t.Errorf("a 400 with a %d-byte body reached the caller as %d bytes", len(big), len(body))
	}
}

// A protocol upgrade is handed over at once with a body the client can
// write to, and holds its key's slot until it is closed.
func TestWebSocketUpgradePassesThrough(t *testing.T) {
	var gotAuth atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth.Store(r.Header.Get("Authorization"))
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo: "), msg...)); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	tr, p, _ := newFakeClockTransport(t, keysOf("sk-ws"), &http.Transport{}, nil, WithFirstTokenTimeout(time.Hour))
	defer tr.CloseIdleConnections()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/v1/realtime", &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: tr},
		HTTPHeader: http.Header{"Authorization": {"Bearer placeholder"}},
	})
	if err != nil {
		t.Fatalf("dial through keypool: %v", err)
	}
	if got := gotAuth.Load(); got != "Bearer sk-ws" {
		t.Errorf("upstream saw Authorization %q", got)
	}
	if st := p.Stats()[0]; st.InFlight != 1 {
		t.Errorf("an open WebSocket holds %d slots, want 1", st.InFlight)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	_, msg, err := c.Read(ctx)
	if err != nil || string(msg) != "echo: hello" {
		t.Fatalf("read %q, %v", msg, err)
	}
	c.Close(websocket.StatusNormalClosure, "")
	waitFor(t, func() bool { return p.Stats()[0].InFlight == 0 })
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

	tr, _, _ := newFakeClockTransport(t, keysOf("sk-a"), srv.Client().Transport, []Option{WithMaxWait(time.Second)})
	resp, err := postGzip(t, tr, srv.URL, chatBody)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Content-Encoding") != "gzip" || gunzip(t, raw) != rateLimited {
		t.Errorf("kept answer: %d, Content-Encoding %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Encoding"), len(raw))
	}

	tr2, p2, _ := newFakeClockTransport(t, []Key{{Secret: "sk-broke", Account: "acct"}}, srv.Client().Transport, []Option{WithMaxWait(time.Second)})
	resp, err = postGzip(t, tr2, srv.URL, chatBody)
	if err == nil {
		resp.Body.Close()
	}
	if st := p2.Stats()[0]; st.State != StateDisabled {
		t.Errorf("a gzipped insufficient_quota left the account %v, want disabled", st.State)
	}
}

// An answer kept from an earlier attempt cannot be read after Close,
// like any other body.
func TestKeptAnswerCannotBeReadAfterClose(t *testing.T) {
	s := &scripted{script: map[string][]func(http.ResponseWriter){"sk-a": {status(401, `{"error":{"message":"bad key"}}`)}}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	tr, p, _ := newFakeClockTransport(t, keysOf("sk-a"), srv.Client().Transport, nil)
	proveAll(p)
	resp, err := post(t, tr, srv.URL, chatBody)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 401 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	resp.Body.Close()
	if n, err := resp.Body.Read(make([]byte, 64)); err == nil || n != 0 {
		t.Errorf("Read after Close = %d, %v; want 0 and an error", n, err)
	}
}

// countingBody is an upstream body that counts what is read of it and
// notes that it was closed.
type countingBody struct {
	r      io.Reader
	n      atomic.Int64
	closed atomic.Bool
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (b *countingBody) Close() error { b.closed.Store(true); return nil }

// A 2xx answer that a classifier retried, kept to hand back when no
// later attempt answers, keeps only the start of its body, bounded as a
// kept error body is (errorPeekBytes), bytes read ahead included: the
// look-ahead past 16 KiB of leading white space is not kept whole, and
// the rest of a long answer is neither buffered nor read to its end.
func TestKeptSuccessfulAnswerIsBoundedLikeErrors(t *testing.T) {
	sent := strings.Repeat("\n", 20<<10) + `{"id":"x","content":"` + strings.Repeat("x", 1<<20) + `"}`
	body := &countingBody{r: strings.NewReader(sent)}
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp := jsonAnswer(200, "")
		resp.Body, resp.ContentLength, resp.Request = body, int64(len(sent)), req
		return resp, nil
	})
	tr, p, _ := newFakeClockTransport(t, keysOf("sk-a"), base, []Option{WithMaxWait(time.Second)},
		WithClassifier(func(resp *http.Response, err error, def Outcome) Outcome {
			if resp != nil && resp.StatusCode == 200 { // not this key's answer: retry, after a cooldown longer than the wait
				return Outcome{Effect: EffectRateLimited, Retry: RetryNow, Wait: time.Hour}
			}
			return def
		}))
	proveAll(p)
	status, got, err := postTo(t, tr, "application/json", chatBody)
	if err != nil {
		t.Fatal(err)
	}
	if status != 200 || len(got) != errorPeekBytes || got != sent[:errorPeekBytes] {
		t.Errorf("kept answer: %d with %d bytes (the first %d sent: %v), want 200 with the first %d bytes sent",
			status, len(got), len(got), strings.HasPrefix(sent, got), errorPeekBytes)
	}
	if n := body.n.Load(); n > aheadMax+errorPeekBytes+drainBytes {
		t.Errorf("read %d bytes of a %d-byte answer that was not handed over; want at most %d", n, len(sent), aheadMax+errorPeekBytes+drainBytes)
	}
	if !body.closed.Load() {
		t.Error("the upstream body of the kept answer was never closed")
	}
}
