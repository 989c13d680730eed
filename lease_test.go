package keypool

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/fakeupstream"
)

func TestStreamHoldsItsSlotUntilClosed(t *testing.T) {
	sim := startLoopbackSim(t, fakeupstream.Config{Keys: simKeys(nil, "sk-a"), StreamChunks: 3})
	tr, p, _ := newFakeClockTransport(t, keysOf("sk-a"), sim.Client().Transport, nil)
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

// A failed attempt gives its TPM reservation back; a success keeps what
// its usage says.
func TestFailedAttemptsGiveTheirTokensBack(t *testing.T) {
	s := &scripted{script: map[string][]func(http.ResponseWriter){
		"sk-a": {status(429, `{}`, "Retry-After", "30")},
		"sk-b": {status(503, `{}`), status(200, `{"usage":{"prompt_tokens":7,"completion_tokens":3}}`, "Content-Type", "application/json")},
	}}
	upstream := httptest.NewServer(s)
	defer upstream.Close()
	tr, p, _ := newFakeClockTransport(t, []Key{{Secret: "sk-a", TPM: 60000, MaxConcurrent: 5, Weight: 1000}, {Secret: "sk-b", TPM: 60000, MaxConcurrent: 5}},
		upstream.Client().Transport, nil)
	proveAll(p)
	resp, err := post(t, tr, upstream.URL, `{"model":"m","max_tokens":1000}`)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if got := s.seenCopy(); strings.Join(got, " ") != "sk-a sk-b sk-b" {
		t.Fatalf("attempts went to %v", got)
	}
	for i, want := range []float64{60000, 60000 - 10} {
		if got := p.snap.Load().keys[i].account.budgets.tpm.Load().tokens; got != want {
			t.Errorf("key %d: TPM bucket holds %v, want %v", i, got, want)
		}
	}
}

func TestBrokenStreamIsNotReplayed(t *testing.T) { inVirtualTime(t, testBrokenStreamIsNotReplayed) }

func testBrokenStreamIsNotReplayed(t *testing.T) {
	sim := startInMemorySim(t, fakeupstream.Config{
		Keys:         map[string]fakeupstream.Key{"sk-a": {BreakAfterFrames: 1}, "sk-b": {BreakAfterFrames: 1}},
		StreamChunks: 5,
	})
	p := newRealClockPool(t, keysOf("sk-a", "sk-b"))
	tr := NewTransport(p, WithBase(sim.Client().Transport), WithFirstTokenTimeout(time.Second))
	resp, err := post(t, tr, sim.URL, `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(resp.Body)
	first, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(first, "data: ") {
		t.Fatalf("first line %q, %v", first, err)
	}
	_, err = io.ReadAll(r)
	resp.Body.Close()
	if err == nil {
		t.Fatal("a stream broken after its first frame read to the end without error")
	}
	if got := sim.Total().Requests; got != 1 {
		t.Errorf("%d upstream requests: the stream was replayed", got)
	}
	if st := p.Stats(); st[0].InFlight+st[1].InFlight != 0 {
		t.Error("broken stream kept its slot")
	}
}

// Read after Close is an error, and Close may race with Read.
func TestBodyReadAfterAndDuringClose(t *testing.T) {
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; ; i++ {
			_, err := io.WriteString(w, "data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n")
			if err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-stop:
				return
			case <-r.Context().Done():
				return
			case <-time.After(time.Millisecond):
			}
		}
	}))
	defer srv.Close()
	defer close(stop)
	tr, p, _ := newFakeClockTransport(t, []Key{{Secret: "sk-a", TPM: 100000}}, srv.Client().Transport, nil)

	resp, err := post(t, tr, srv.URL, `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	bufio.NewReader(resp.Body).ReadString('\n')
	resp.Body.Close()
	if n, err := resp.Body.Read(make([]byte, 10)); err == nil || n != 0 {
		t.Errorf("Read after Close = %d, %v; want 0 and an error", n, err)
	}

	for range 20 {
		resp, err := post(t, tr, srv.URL, `{"model":"m","stream":true}`)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 7)
			for {
				if _, err := resp.Body.Read(buf); err != nil {
					return
				}
			}
		}()
		time.Sleep(time.Millisecond)
		resp.Body.Close()
		wg.Wait()
	}
	if st := p.Stats()[0]; st.InFlight != 0 {
		t.Errorf("%d in flight after every body was closed", st.InFlight)
	}
}

// tpmHeld is what the TPM bucket of p's first key holds.
func tpmHeld(p *Pool) float64 {
	b := p.snap.Load().keys[0].account.budgets.tpm.Load()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tokens
}

// A 2xx answer without usage settles its TPM reservation to the
// documented estimate (README, "Adaptive limits, tokens and streams"):
// prompt bytes / 4 plus max_tokens, or 256 when the request sets none.
// The reservation is kept, not given back. An answer with usage settles
// to it instead.
func TestAnswerWithoutUsageKeepsTheEstimate(t *testing.T) {
	const withMax = `{"model":"m","max_tokens":100,"messages":[{"role":"user","content":"hello there"}]}`
	const noMax = `{"model":"m","messages":[{"role":"user","content":"hello there"}]}`
	for _, tt := range []struct {
		name, request, answer string
		used                  int
	}{
		{"no usage, max_tokens", withMax, `{"id":"x","choices":[]}`, len(withMax)/4 + 100},
		{"no usage, no max_tokens", noMax, `{"id":"x","choices":[]}`, len(noMax)/4 + 256},
		{"usage", withMax, `{"id":"x","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}`, 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
				io.Copy(io.Discard, req.Body)
				return jsonAnswer(200, tt.answer), nil
			})
			tr, p, _ := newFakeClockTransport(t, []Key{{Secret: "sk-a", TPM: 10000}}, base, nil)
			proveAll(p)
			status, _, err := postTo(t, tr, "application/json", tt.request)
			if err != nil || status != 200 {
				t.Fatalf("%d %v", status, err)
			}
			// The pool's clock stands still: the bucket refills nothing.
			if got, want := tpmHeld(p), float64(10000-tt.used); got != want {
				t.Errorf("TPM bucket holds %v after the answer, want %v (%d tokens used)", got, want, tt.used)
			}
		})
	}
}
