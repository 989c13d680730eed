package keypool

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/fakeupstream"
)

func TestQueuedStreamFailsOverAfterFirstTokenTimeout(t *testing.T) {
	sim := startUpstream(t, fakeupstream.Config{
		Keys: map[string]fakeupstream.Key{
			"sk-queued": {QueueFor: time.Hour}, // keep-alives only
			"sk-live":   {},
		},
		StreamChunks: 3,
	})
	tr := NewTransport(mustPool(t, []Key{{Secret: "sk-queued", Weight: 1000}, {Secret: "sk-live"}}),
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
	sim := startUpstream(t, fakeupstream.Config{
		Keys:         map[string]fakeupstream.Key{"sk-slow": {QueueFor: 60 * time.Millisecond}},
		StreamChunks: 2,
	})
	tr := NewTransport(mustPool(t, keysOf("sk-slow")), WithBase(sim.Client().Transport), WithFirstTokenTimeout(2*time.Second))
	resp, err := post(t, tr, sim.URL, `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); !strings.Contains(body, "tok1") || sim.Total().Requests != 1 {
		t.Errorf("body %q after %d requests", body, sim.Total().Requests)
	}
}

func TestWhitespaceOnlyAnswerIsRetried(t *testing.T) {
	sim := startUpstream(t, fakeupstream.Config{Keys: map[string]fakeupstream.Key{
		"sk-empty": {EmptyAnswers: true}, "sk-good": {},
	}})
	p := mustPool(t, []Key{{Secret: "sk-empty", Weight: 1000}, {Secret: "sk-good"}})
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
	p2 := mustPool(t, keysOf("sk-empty"), WithMaxWait(10*time.Millisecond))
	_, err = post(t, NewTransport(p2, WithBase(sim.Client().Transport), WithMaxAttempts(2)), sim.URL, chatBody)
	if !errors.Is(err, ErrEmptyAnswer) {
		t.Errorf("err = %v, want ErrEmptyAnswer", err)
	}
}

func TestBrokenStreamIsNotReplayed(t *testing.T) {
	sim := startUpstream(t, fakeupstream.Config{
		Keys:         map[string]fakeupstream.Key{"sk-a": {BreakAfterFrames: 1}, "sk-b": {BreakAfterFrames: 1}},
		StreamChunks: 5,
	})
	p := mustPool(t, keysOf("sk-a", "sk-b"))
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

func TestUsageScanner(t *testing.T) {
	tests := []struct {
		body  string
		total int
		found bool
	}{
		{`{"id":"x","usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}`, 21, true},
		{"data: {\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\ndata: [DONE]\n\n", 12, true},
		{`{"usage":{"input_tokens":3,"output_tokens":4}}`, 7, true},
		{`{"content":"the word \"usage\" here","usage" : {"total_tokens":5}}`, 5, true},
		{`{"usage":{"total_tokens":5,"note":"}{"}}`, 5, true},
		{`{"no":"usage"}`, 0, false},
		{`{"usage":{"total_tokens":` + strings.Repeat("1", 600) + `}}`, 0, false},
	}
	for _, tt := range tests {
		// Fed in pieces of every size, the answer is the same.
		for _, step := range []int{1, 3, 7, len(tt.body)} {
			var s usageScanner
			for i := 0; i < len(tt.body); i += step {
				s.feed([]byte(tt.body[i:min(i+step, len(tt.body))]))
			}
			if s.found != tt.found || s.tokens() != tt.total {
				t.Errorf("step %d, %s: found %v total %d; want %v %d", step, tt.body, s.found, s.tokens(), tt.found, tt.total)
			}
		}
	}
}

func FuzzUsageScanner(f *testing.F) {
	f.Add([]byte(`{"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}`), 3)
	f.Add([]byte("data: {\"usage\":null}\n\ndata: {\"usage\":{\"total_tokens\":2}}\n\n"), 1)
	f.Fuzz(func(t *testing.T, body []byte, step int) {
		step = max(1, step%64)
		var whole, pieces usageScanner
		whole.feed(body)
		for i := 0; i < len(body); i += step {
			pieces.feed(body[i:min(i+step, len(body))])
		}
		if whole.found != pieces.found || whole.tokens() != pieces.tokens() {
			t.Fatalf("whole %v/%d, in pieces of %d %v/%d", whole.found, whole.tokens(), step, pieces.found, pieces.tokens())
		}
	})
}

func mustPool(t *testing.T, keys []Key, opts ...Option) *Pool {
	t.Helper()
	p, err := New(keys, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
