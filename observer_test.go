package keypool

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/fakeupstream"
)

// events records every event of a pool.
type events struct {
	mu       sync.Mutex
	attempts []AttemptEvent
	states   []StateEvent
	limits   []LimitEvent
	refused  []RetryRefusedEvent
	requests []RequestEvent
}

func (ev *events) observer() Observer {
	add := func(f func()) { ev.mu.Lock(); f(); ev.mu.Unlock() }
	return Observer{
		Attempt:      func(e AttemptEvent) { add(func() { ev.attempts = append(ev.attempts, e) }) },
		State:        func(e StateEvent) { add(func() { ev.states = append(ev.states, e) }) },
		Limit:        func(e LimitEvent) { add(func() { ev.limits = append(ev.limits, e) }) },
		RetryRefused: func(e RetryRefusedEvent) { add(func() { ev.refused = append(ev.refused, e) }) },
		Request: func(e RequestEvent) {
			e.Attempts = append([]Attempt(nil), e.Attempts...) // not ours to keep
			add(func() { ev.requests = append(ev.requests, e) })
		},
	}
}

// statesOf returns the state events of the key named name.
func (ev *events) statesOf(name string) []StateEvent {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	var out []StateEvent
	for _, e := range ev.states {
		if e.Key == name {
			out = append(out, e)
		}
	}
	return out
}

// A revoked key, and the key that served instead: every attempt, the
// key's disablement with its cause, and the request with both attempts.
func TestObserverSeesAttemptsStatesAndRequests(t *testing.T) {
	sim := startInMemorySim(t, fakeupstream.Config{Keys: simKeys(map[string]fakeupstream.Fault{"sk-revoked-0123456789": fakeupstream.FaultRevoked},
		"sk-revoked-0123456789", "sk-good-0123456789ab")})
	var ev events
	tr, p, c := newFakeClockTransport(t, []Key{
		{Secret: "sk-revoked-0123456789", Name: "revoked", Weight: 1000},
		{Secret: "sk-good-0123456789ab", Name: "good"},
	}, sim.Client().Transport, []Option{WithObserver(ev.observer())})
	resp, err := post(t, tr, sim.URL, chatBody)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)

	if len(ev.attempts) != 2 {
		t.Fatalf("%d attempt events, want 2: %+v", len(ev.attempts), ev.attempts)
	}
	first, second := ev.attempts[0], ev.attempts[1]
	if first.Key != "revoked" || first.Number != 1 || first.Status != 401 || first.Outcome.Effect != EffectKeyRevoked {
		t.Errorf("first attempt %+v", first)
	}
	if second.Key != "good" || second.Number != 2 || second.Status != 200 || second.Outcome.Effect != EffectOK {
		t.Errorf("second attempt %+v", second)
	}
	states := ev.statesOf("revoked")
	if len(states) != 1 {
		t.Fatalf("state events of the revoked key: %+v", states)
	}
	if s := states[0]; s.State != StateDisabled || s.Cause != "401 invalid_api_key" || !s.Until.Equal(c.Now().Add(30*time.Minute)) {
		t.Errorf("revoked key's event: %+v", s)
	}
	if s := ev.statesOf("good"); len(s) != 1 || s[0].State != StateReady || s[0].Cause != "answered" {
		t.Errorf("the good key's first answer: %+v", s)
	}
	if len(ev.requests) != 1 {
		t.Fatalf("%d request events", len(ev.requests))
	}
	r := ev.requests[0]
	if r.Key != "good" || r.Status != 200 || len(r.Attempts) != 2 || r.Method != "POST" || r.Path != "/v1/chat/completions" {
		t.Errorf("request event %+v", r)
	}
	// Disable and Enable are changes too.
	p.Disable("good")
	p.Enable("good")
	if s := ev.statesOf("good"); len(s) != 3 || s[1].Cause != "Pool.Disable" || s[2].State != StateProbing {
		t.Errorf("Disable, Enable: %+v", s)
	}
}

// An ejection says how many failures caused it and when the probe is
// due; the probe's answer puts the key back, and says so.
func TestObserverSeesEjectionAndRecovery(t *testing.T) {
	var ev events
	p, c := newFakeClockPool(t, []Key{{Secret: "sk-a", Name: "a"}}, WithEjection(2, time.Minute), WithObserver(ev.observer()))
	proveAll(p)
	for range 2 {
		l := mustAcquire(t, p, &acquireRequest{})
		l.cause = "503"
		p.report(l, Outcome{Effect: EffectFailure}, answer(503))
		l.release()
	}
	c.Advance(time.Second)
	l := mustAcquire(t, p, &acquireRequest{})
	p.report(l, Outcome{Effect: EffectOK}, answer(200))
	l.release()
	s := ev.statesOf("a")
	if len(s) != 2 {
		t.Fatalf("state events %+v", s)
	}
	if s[0].State != StateEjected || s[0].Cause != "2 failures in a row, the last 503" || !s[0].Until.Equal(s[0].At.Add(time.Second)) {
		t.Errorf("ejection %+v", s[0])
	}
	if s[1].State != StateReady || s[1].Cause != "answered its probe" {
		t.Errorf("recovery %+v", s[1])
	}
}

// A cooldown is one event per key of the account, when it begins; 429s
// while it lasts add none.
func TestObserverSeesCooldownsOncePerKey(t *testing.T) {
	var ev events
	p, _ := newFakeClockPool(t, []Key{{Secret: "sk-a", Name: "a", Account: "team"}, {Secret: "sk-b", Name: "b", Account: "team"}},
		WithObserver(ev.observer()))
	proveAll(p)
	for range 3 {
		l := &lease{pool: p, key: p.snap.Load().keys[0]}
		p.report(l, Outcome{Effect: EffectRateLimited, Wait: 5 * time.Second}, answer(429))
	}
	for _, name := range []string{"a", "b"} {
		if s := ev.statesOf(name); len(s) != 1 || s[0].State != StateCooling || s[0].Account != "team" || s[0].Until.Sub(s[0].At) != 5*time.Second {
			t.Errorf("%s: %+v", name, s)
		}
	}
}

// A learned limit reports each change; the retry budget reports each
// retry it refuses.
func TestObserverSeesLimitsAndRefusedRetries(t *testing.T) {
	inVirtualTime(t, func(t *testing.T) {
		var ev events
		sim := startInMemorySim(t, fakeupstream.Config{Keys: simKeys(nil, "sk-a"), Latency: 10 * time.Millisecond})
		p := newRealClockPool(t, []Key{{Secret: "sk-a", Name: "a"}}, WithObserver(ev.observer()))
		client := &http.Client{Transport: NewTransport(p, WithBase(sim.Client().Transport))}
		hammer(t, client, sim.URL, 4, 20)
		if len(ev.limits) == 0 || ev.limits[0].From != 1 || ev.limits[0].To != 2 || ev.limits[0].Key != "a" {
			t.Errorf("limit events %+v", ev.limits)
		}

		down := startInMemorySim(t, fakeupstream.Config{Keys: simKeys(map[string]fakeupstream.Fault{"sk-a": fakeupstream.FaultServerError}, "sk-a")})
		p = newRealClockPool(t, []Key{{Secret: "sk-a", Name: "a"}}, WithObserver(ev.observer()), WithEjection(1000, time.Minute))
		client = &http.Client{Transport: NewTransport(p, WithBase(down.Client().Transport), WithRetryBudget(0, 0))}
		if err := postChat(context.Background(), client, down.URL, chatBody); err == nil {
			t.Fatal("a provider that fails everything served")
		}
		if len(ev.refused) != 1 || ev.refused[0].Key != "a" || ev.refused[0].Status != 500 {
			t.Errorf("refused retries %+v", ev.refused)
		}
	})
}

// Observers run with no lock held: one may call the pool back, and one
// that blocks holds up its own request only, not the others'.
func TestSlowObserverStallsOnlyItsRequest(t *testing.T) {
	inVirtualTime(t, func(t *testing.T) {
		sim := startInMemorySim(t, fakeupstream.Config{Keys: simKeys(nil, "sk-slow-0123456789", "sk-fast-0123456789")})
		release := make(chan struct{})
		var p *Pool
		obs := Observer{Attempt: func(e AttemptEvent) {
			p.Stats() // calls back into the pool
			if e.Key == "slow" {
				<-release
			}
		}}
		p = newRealClockPool(t, []Key{
			{Secret: "sk-slow-0123456789", Name: "slow", Models: []string{"slow-model"}},
			// One at a time: the fast requests queue, and so take the
			// pool's lock, while the slow one's observer blocks.
			{Secret: "sk-fast-0123456789", Name: "fast", Models: []string{"deepseek-chat"}, MaxConcurrent: 1},
		}, WithObserver(obs))
		client := &http.Client{Transport: NewTransport(p, WithBase(sim.Client().Transport))}
		slowDone := make(chan error, 1)
		go func() {
			slowDone <- postChat(context.Background(), client, sim.URL, strings.Replace(chatBody, "deepseek-chat", "slow-model", 1))
		}()
		time.Sleep(time.Second) // the slow request is held by its observer now
		if failed := hammer(t, client, sim.URL, 4, 20); failed != 0 {
			t.Fatalf("%d fast requests failed", failed)
		}
		select {
		case err := <-slowDone:
			t.Fatalf("the slow request returned before its observer did: %v", err)
		default:
		}
		close(release)
		if err := <-slowDone; err != nil {
			t.Fatal(err)
		}
	})
}

// An observer added to a serving pool gets the events from then on.
func TestAddObserver(t *testing.T) {
	var ev events
	p, _ := newFakeClockPool(t, []Key{{Secret: "sk-a", Name: "a"}})
	p.Disable("a")
	p.AddObserver(ev.observer())
	p.Enable("a")
	if s := ev.statesOf("a"); len(s) != 1 || s[0].State != StateProbing {
		t.Errorf("events after AddObserver: %+v", s)
	}
}

// The events' durations, in virtual time: two requests for a key that
// takes one at a time and answers in 100 ms. The second waits for the
// first; each attempt takes 100 ms; the requests take 100 and 200 ms.
func TestObserverTimings(t *testing.T) { inVirtualTime(t, testObserverTimings) }

func testObserverTimings(t *testing.T) {
	const latency = 100 * time.Millisecond
	var ev events
	p := newRealClockPool(t, []Key{{Secret: "sk-only-0123456789", MaxConcurrent: 1}}, WithObserver(ev.observer()))
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		time.Sleep(latency)
		resp := jsonAnswer(200, `{}`)
		resp.Request = r
		return resp, nil
	})
	tr := NewTransport(p, WithBase(base))
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _, err := postTo(t, tr, "application/json", chatBody)
			if err != nil || code != 200 {
				t.Errorf("got %d %v", code, err)
			}
		}()
	}
	wg.Wait()
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if len(ev.attempts) != 2 || len(ev.requests) != 2 {
		t.Fatalf("%d attempts, %d requests", len(ev.attempts), len(ev.requests))
	}
	for i, want := range []time.Duration{0, latency} {
		a, r := ev.attempts[i], ev.requests[i]
		if a.Waited != want || a.Took != latency {
			t.Errorf("attempt %d: waited %v, took %v; want %v and %v", i, a.Waited, a.Took, want, latency)
		}
		if r.Waited != want || r.Took != want+latency {
			t.Errorf("request %d: waited %v, took %v; want %v and %v", i, r.Waited, r.Took, want, want+latency)
		}
	}
}
