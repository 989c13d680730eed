package keypool

import (
	"context"
	"errors"
	"math"
	"net/http"
	"testing"
	"time"
)

func TestWeightedShares(t *testing.T) {
	p, _ := newFakeClockPool(t, []Key{
		{Secret: "sk-a", Weight: 1}, {Secret: "sk-b", Weight: 3}, {Secret: "sk-c", Weight: 6},
	})
	proveAll(p)
	counts := map[*keyState]int{}
	const n = 10000
	for range n {
		l := mustAcquire(t, p, &acquireRequest{})
		counts[l.key]++
		l.release()
	}
	for _, k := range p.snap.Load().keys {
		want := k.cfg.Weight / 10
		if got := float64(counts[k]) / n; math.Abs(got-want) > 0.01 {
			t.Errorf("%s: share %.3f, want %.3f", k.name, got, want)
		}
	}
}

func TestWeightsHoldWhenAKeyIsCooling(t *testing.T) {
	p, _ := newFakeClockPool(t, []Key{
		{Secret: "sk-a", Weight: 1}, {Secret: "sk-b", Weight: 2}, {Secret: "sk-c", Weight: 10},
	})
	proveAll(p)
	keys := p.snap.Load().keys
	p.report(&lease{pool: p, key: keys[2]}, Outcome{Effect: EffectRateLimited, Wait: time.Hour}, answer(429))
	counts := map[*keyState]int{}
	for range 3000 {
		l := mustAcquire(t, p, &acquireRequest{})
		counts[l.key]++
		l.release()
	}
	if counts[keys[2]] != 0 {
		t.Fatalf("cooling key got %d requests", counts[keys[2]])
	}
	if r := float64(counts[keys[1]]) / float64(counts[keys[0]]); r < 1.8 || r > 2.2 {
		t.Errorf("b/a ratio %.2f, want about 2", r)
	}
}

func TestModelFilter(t *testing.T) {
	p, _ := newFakeClockPool(t, []Key{
		{Secret: "sk-a", Models: []string{"deepseek-chat"}}, {Secret: "sk-b", Models: []string{"gpt-4o"}},
	})
	proveAll(p)
	for range 20 {
		l := mustAcquire(t, p, &acquireRequest{model: "gpt-4o"})
		if l.key.name != p.snap.Load().keys[1].name {
			t.Fatal("model filter ignored")
		}
		l.release()
	}
	if _, err := acquireFor(p, context.Background(), &acquireRequest{model: "llama"}); !errors.Is(err, ErrNoKeyAvailable) {
		t.Errorf("unknown model: %v", err)
	}
}

func TestRPMWaitsForTokens(t *testing.T) {
	p, c := newFakeClockPool(t, []Key{{Secret: "sk-a", RPM: 60}})
	proveAll(p)
	for range 60 {
		mustAcquire(t, p, &acquireRequest{}).release()
	}
	done := make(chan *lease)
	go func() { done <- mustAcquire(t, p, &acquireRequest{}) }()
	waitFor(t, func() bool { return p.nwait.Load() == 1 })
	c.Advance(500 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("61st request within a second")
	default:
	}
	c.Advance(500 * time.Millisecond)
	(<-done).release()
}

// Requests without a body reserve no tokens and are not filtered by model.
func TestBodylessRequests(t *testing.T) {
	srv, _ := fixedAnswer(t, 200, "application/json", `{"data":[]}`)
	tr, p, _ := newFakeClockTransport(t, []Key{{Secret: "sk-a", TPM: 2000, Models: []string{"deepseek-chat"}}}, srv.Client().Transport, nil)
	proveAll(p)
	for i := range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/models", nil)
		resp, err := tr.RoundTrip(req)
		cancel()
		if err != nil {
			t.Fatalf("GET /v1/models #%d: %v", i+1, err)
		}
		readAll(t, resp)
	}
	if got := p.snap.Load().keys[0].account.budgets.tpm.Load().tokens; got != 2000 {
		t.Errorf("TPM bucket holds %v after 10 body-less requests, want 2000", got)
	}
}
