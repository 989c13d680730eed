package keypool

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/fakeupstream"
)

func TestReconfigureUnderLoad(t *testing.T) { inVirtualTime(t, testReconfigureUnderLoad) }

func testReconfigureUnderLoad(t *testing.T) {
	secrets := make([]string, 8)
	for i := range secrets {
		secrets[i] = fmt.Sprintf("sk-live-%d-0123456789abcdef", i)
	}
	sim := startInMemorySim(t, fakeupstream.Config{Keys: simKeys(nil, secrets...), Latency: time.Millisecond, StreamChunks: 2})
	p := newRealClockPool(t, keysOf(secrets[:3]...))
	tr := NewTransport(p, WithBase(sim.Client().Transport))
	client := &http.Client{Transport: tr}
	ctx, stop := context.WithCancel(context.Background())
	var sent atomic.Int64
	loadDone := make(chan int64)
	go func() {
		loadDone <- runLoad(16, 1<<30, func(int) error {
			if ctx.Err() != nil {
				return errStopLoad // the reconfiguration is over
			}
			sent.Add(1)
			return postChat(context.Background(), client, sim.URL, chatBody)
		})
	}()
	// Reconfigure while the callers run.
	for i := 3; i < len(secrets); i++ {
		if err := p.Add(Key{Secret: secrets[i], Weight: float64(i)}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
		names := p.Stats()
		if err := p.SetWeight(names[1].Name, 3); err != nil {
			t.Fatal(err)
		}
		if err := p.SetLimits(names[2].Name, Limits{MaxConcurrent: 4}); err != nil {
			t.Fatal(err)
		}
		if err := p.Remove(names[0].Name); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if failed := <-loadDone; failed != 0 {
		t.Errorf("%d of %d requests failed while the pool was reconfigured", failed, sent.Load())
	}
	st := p.Stats()
	if len(st) != 3 {
		t.Fatalf("%d keys left, want 3", len(st))
	}
	for _, s := range st {
		if s.InFlight != 0 {
			t.Errorf("%s: %d in flight after the callers stopped", s.Name, s.InFlight)
		}
	}
	if sim.Counters(secrets[7]).OK == 0 {
		t.Error("a key added at runtime got no traffic")
	}
}

func TestRemovedKeyFinishesItsRequest(t *testing.T) {
	inVirtualTime(t, testRemovedKeyFinishesItsRequest)
}

func testRemovedKeyFinishesItsRequest(t *testing.T) {
	sim := startInMemorySim(t, fakeupstream.Config{Keys: simKeys(nil, "sk-a", "sk-b"), StreamChunks: 3, ChunkEvery: 5 * time.Millisecond})
	p := newRealClockPool(t, []Key{{Secret: "sk-a", Weight: 1000, MaxConcurrent: 1}, {Secret: "sk-b"}})
	tr := NewTransport(p, WithBase(sim.Client().Transport))
	resp, err := post(t, tr, sim.URL, `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	removed := p.Stats()[0]
	if removed.InFlight != 1 {
		t.Fatalf("stream not on the heavy key: %+v", removed)
	}
	if err := p.Remove(removed.Name); err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); !strings.Contains(body, "[DONE]") {
		t.Errorf("stream on a removed key cut short: %q", body)
	}
	k := p.snap.Load().keys[0]
	if k.name == removed.Name {
		t.Fatal("key not removed")
	}
	// The removed key's slot came back to its own account, not another's.
	if n := p.Stats()[0].InFlight; n != 0 {
		t.Errorf("remaining key has %d in flight", n)
	}
	if err := p.Remove(k.name); !errors.Is(err, ErrNoKeys) {
		t.Errorf("removing the last key: %v", err)
	}
}

func TestReconfigureValidates(t *testing.T) {
	p := newRealClockPool(t, []Key{{Secret: "sk-a-0123456789abcdef", Account: "acme", RPM: 60}})
	if err := p.Add(Key{Secret: "sk-b"}, Key{Secret: "sk-a-0123456789abcdef"}); err == nil || !strings.Contains(err.Error(), "key #1") {
		t.Errorf("duplicate secret: %v", err)
	}
	if err := p.Add(Key{Secret: "sk-c", Account: "acme", RPM: 30}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("conflicting account limits: %v", err)
	}
	if len(p.Stats()) != 1 {
		t.Fatal("a failed Add added keys")
	}
	if err := p.Add(Key{Secret: "sk-d", Account: "acme"}); err != nil {
		t.Fatal(err)
	}
	s := p.snap.Load()
	if s.keys[0].account != s.keys[1].account {
		t.Error("added key did not join its account")
	}
	for _, w := range []float64{-1, math.NaN(), math.Inf(1)} {
		if err := p.SetWeight(s.keys[0].name, w); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("SetWeight(%v): %v", w, err)
		}
	}
	if err := p.SetLimits(s.keys[0].name, Limits{RPM: -1}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("negative limit: %v", err)
	}
	if err := p.SetWeight("nope", 1); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("unknown key: %v", err)
	}
	if err := p.SetLimits(s.keys[1].name, Limits{MaxConcurrent: 5}); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st[0].Limit != 5 || st[1].Limit != 5 {
		t.Errorf("account limit after SetLimits: %d %d", st[0].Limit, st[1].Limit)
	}
}

func TestSetWeightChangesShares(t *testing.T) {
	p, _ := newFakeClockPool(t, keysOf("sk-a", "sk-b"))
	proveAll(p)
	if err := p.SetWeight(p.Stats()[1].Name, 4); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for range 5000 {
		l := mustAcquire(t, p, &acquireRequest{})
		counts[l.key.name]++
		l.release()
	}
	if r := float64(counts[p.Stats()[1].Name]) / 5000; math.Abs(r-0.8) > 0.02 {
		t.Errorf("share after SetWeight(4): %.3f, want 0.8", r)
	}
}

// A secret passed where a name belongs is never echoed back.
func TestSecretPassedAsNameIsNotEchoed(t *testing.T) {
	const secret = "sk-proj-Abcdefghijklmnopqrstuvwxyz0123456789"
	p, _ := newFakeClockPool(t, []Key{{Secret: secret}, {Secret: "sk-other-0123456789abcdef"}})
	for _, call := range []struct {
		name string
		err  error
	}{
		{"Disable", p.Disable(secret)},
		{"Enable", p.Enable(secret)},
		{"Remove", p.Remove(secret)},
		{"SetWeight", p.SetWeight(secret, 2)},
		{"SetLimits", p.SetLimits(secret, Limits{RPM: 1, TPM: 1, MaxConcurrent: 1})},
		{"Disable unknown", p.Disable("sk-proj-Zyxwvutsrqponmlkjihgfedcba9876543210")},
	} {
		if call.err == nil || !errors.Is(call.err, ErrUnknownKey) {
			t.Errorf("%s(secret) = %v, want ErrUnknownKey", call.name, call.err)
			continue
		}
		if msg := call.err.Error(); strings.Contains(msg, secret[8:]) || strings.Contains(msg, "Zyxwvutsrqponmlkjihgfedcba") {
			t.Errorf("%s echoes the secret: %v", call.name, msg)
		}
	}
	for _, keys := range [][]Key{
		{{Secret: secret, Name: secret}},
		{{Secret: secret}, {Secret: "sk-other-0123456789abcdef", Name: secret}},
		{{Secret: secret, Account: secret}},
	} {
		_, err := New(keys)
		if err == nil || strings.Contains(err.Error(), secret[8:]) {
			t.Errorf("New with a secret as a name or account: %v", err)
		}
	}
}

// SetWeight and SetLimits with a bad value never echo the name they were
// given: it may be a secret passed where a name belongs.
func TestSetWeightAndSetLimitsNeverEchoASecret(t *testing.T) {
	const secret = "sk-proj-Abcdefghijklmnopqrstuvwxyz0123456789"
	p, _ := newFakeClockPool(t, []Key{{Secret: secret}, {Secret: "sk-other-0123456789abcdef"}})
	for name, err := range map[string]error{
		"SetWeight": p.SetWeight(secret, -1),
		"SetLimits": p.SetLimits(secret, Limits{RPM: -1}),
	} {
		if err != nil && strings.Contains(err.Error(), secret[8:]) {
			t.Errorf("%s(secret, bad value) echoes the secret: %v", name, err)
		}
	}
}

// queueBehindKeyA builds a pool where a request for 1500 tokens waits
// for key "a" (TPM 6000, empty: 15 s) because key "b" (TPM 600, holding
// 100) cannot give it 600 within WithMaxWait (50 s > 30 s), and a request
// for 50 tokens, which b could serve now, waits behind it in arrival
// order. Nothing moves the pool's clock.
func queueBehindKeyA(t *testing.T) (p *Pool, bigDone chan error, smallDone chan *lease) {
	t.Helper()
	p, c := newFakeClockPool(t, []Key{{Name: "a", Secret: "sk-a", TPM: 6000}, {Name: "b", Secret: "sk-b", TPM: 600}},
		WithMaxWait(30*time.Second), WithAdaptiveLimits(false))
	proveAll(p)
	s := p.snap.Load()
	s.byName["a"].account.budgets.tpm.Load().take(c.Now(), 6000)
	s.byName["b"].account.budgets.tpm.Load().take(c.Now(), 500)
	bigDone, smallDone = queueBigThenSmall(t, p, context.Background(), 1500, 50, func() {})
	return p, bigDone, smallDone
}

// Removing the key a waiter at the head of the queue needed, or changing
// limits, runs the queue again at once: a waiter another key can serve
// is served, and one no key can serve in time fails now.
func TestReconfigurationLetsWaitersThrough(t *testing.T) {
	t.Run("Remove", func(t *testing.T) {
		p, bigDone, smallDone := queueBehindKeyA(t)
		if err := p.Remove("a"); err != nil {
			t.Fatal(err)
		}
		if n := p.nwait.Load(); n != 0 {
			t.Fatalf("%d waiter(s) still queued after the key the first one needed was removed; key b can serve the second now", n)
		}
		if err := <-bigDone; !errors.Is(err, ErrWaitTimeout) {
			t.Errorf("big waiter: %v, want ErrWaitTimeout (b frees up too late)", err)
		}
		(<-smallDone).release()
	})
	t.Run("SetLimits", func(t *testing.T) {
		p, bigDone, smallDone := queueBehindKeyA(t)
		if err := p.SetLimits("a", Limits{TPM: 3000}); err != nil { // a new budget, full
			t.Fatal(err)
		}
		if n := p.nwait.Load(); n != 0 {
			t.Fatalf("%d waiter(s) still queued after key a's TPM was raised; it can serve both now", n)
		}
		if err := <-bigDone; err != nil {
			t.Errorf("big waiter: %v", err)
		}
		(<-smallDone).release()
	})
}
