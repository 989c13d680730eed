package keypool

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Durations too large to add to the clock mean "as long as possible",
// never a time in the past.
func TestHugeDurationsSaturate(t *testing.T) {
	forever := time.Duration(math.MaxInt64)

	t.Run("WithDisableFor", func(t *testing.T) {
		p, c := newTestPool(t, keysOf("sk-a", "sk-b"), WithDisableFor(forever))
		proveAll(p)
		l := mustAcquire(t, p, &acquireRequest{})
		p.report(l, Outcome{Effect: EffectKeyRevoked, Retry: RetryNow}, 401)
		l.release()
		c.Advance(1000 * time.Hour)
		for _, st := range p.Stats() {
			if st.Name == l.key.name && st.State != StateDisabled {
				t.Errorf("revoked key is %v after WithDisableFor(max)", st.State)
			}
		}
	})

	t.Run("WithEjection", func(t *testing.T) {
		p, c := newTestPool(t, keysOf("sk-a", "sk-b"), WithEjection(1, forever))
		proveAll(p)
		l := mustAcquire(t, p, &acquireRequest{})
		p.report(l, Outcome{Effect: EffectFailure, Retry: RetryBackoff}, 500)
		l.release()
		c.Advance(1000 * time.Hour)
		for _, st := range p.Stats() {
			if st.Name == l.key.name && st.State != StateEjected {
				t.Errorf("failing key is %v after WithEjection(1, max)", st.State)
			}
		}
	})

	t.Run("WithCooldown doubled", func(t *testing.T) {
		p, c := newTestPool(t, keysOf("sk-a"), WithCooldown(forever/4), WithMaxCooldown(forever), WithAdaptiveLimits(false))
		proveAll(p)
		l := mustAcquire(t, p, &acquireRequest{})
		defer l.release()
		for i := range 40 {
			p.report(l, Outcome{Effect: EffectRateLimited, Retry: RetryNow}, 429)
			if st := p.Stats()[0]; st.State != StateCooling || !st.CooldownUntil.After(c.Now()) {
				t.Fatalf("after 429 #%d: %v until %v", i+1, st.State, st.CooldownUntil)
			}
		}
	})

	t.Run("WithMaxWait", func(t *testing.T) {
		s := &scripted{script: map[string][]func(http.ResponseWriter){
			"sk-a": {status(429, `{}`, "Retry-After", "1")},
		}}
		upstream := httptest.NewServer(s)
		defer upstream.Close()
		tr, p, c := newTestTransport(t, keysOf("sk-a"), upstream.Client().Transport, []Option{WithMaxWait(forever)})
		proveAll(p)
		done := make(chan *http.Response, 1)
		go func() {
			resp, err := post(t, tr, upstream.URL, chatBody)
			if err != nil {
				t.Error(err)
			}
			done <- resp
		}()
		waitFor(t, func() bool { return len(s.seenCopy()) == 1 && p.nwait.Load() == 1 })
		c.Advance(time.Second)
		resp := <-done
		if resp == nil || resp.StatusCode != 200 {
			t.Fatalf("got %v, want the 200 after waiting out Retry-After", resp)
		}
		readAll(t, resp)
	})
}

// A waiter that leaves the queue lets the ones behind it through.
func TestLeavingWaiterLetsTheNextOneThrough(t *testing.T) {
	p, _ := newTestPool(t, []Key{{Secret: "sk-a", TPM: 2000, MaxConcurrent: 10}})
	proveAll(p)
	held := mustAcquire(t, p, &acquireRequest{tokens: 1900}) // 100 tokens left
	defer held.release()

	bigCtx, cancelBig := context.WithCancel(context.Background())
	bigDone := make(chan error, 1)
	go func() {
		_, err := acquireFor(p, bigCtx, &acquireRequest{tokens: 1500})
		bigDone <- err
	}()
	waitFor(t, func() bool { return p.nwait.Load() == 1 })
	smallDone := make(chan *lease, 1)
	go func() {
		l, err := acquireFor(p, context.Background(), &acquireRequest{tokens: 50})
		if err != nil {
			t.Error(err)
		}
		smallDone <- l
	}()
	waitFor(t, func() bool { return p.nwait.Load() == 2 })
	cancelBig()
	if err := <-bigDone; !errors.Is(err, context.Canceled) {
		t.Errorf("big waiter: %v", err)
	}
	select {
	case l := <-smallDone:
		if l != nil {
			l.release()
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the small waiter was not served when the one ahead of it left")
	}
}

// Requests without a body reserve no tokens and are not filtered by model.
func TestBodylessRequests(t *testing.T) {
	srv, _ := fixedAnswer(t, 200, "application/json", `{"data":[]}`)
	tr, p, _ := newTestTransport(t, []Key{{Secret: "sk-a", TPM: 2000, Models: []string{"deepseek-chat"}}}, srv.Client().Transport, nil)
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
	if got := p.snap.Load().keys[0].account.(*localAccount).tpm.Load().tokens; got != 2000 {
		t.Errorf("TPM bucket holds %v after 10 body-less requests, want 2000", got)
	}
}

// The model is found whatever the numbers around it look like.
func TestModelFoundDespiteOddNumbers(t *testing.T) {
	for _, body := range []string{
		`{"model":"m1","max_tokens":100.0}`,
		`{"model":"m1","max_tokens":"100"}`,
		`{"model":"m1","max_tokens":1e3}`,
		`{"max_completion_tokens":1e400,"model":"m1"}`,
		`{"model":"m1","max_tokens":null,"temperature":"hot"}`,
	} {
		if m := parseRequestMeta([]byte(body)); m.Model != "m1" || m.Tokens <= 0 {
			t.Errorf("parseRequestMeta(%s) = %+v, want model m1 and a positive estimate", body, m)
		}
	}
}

// Enable puts a key back on probation: one request at a time until one
// succeeds, as the docs say.
func TestEnableProbes(t *testing.T) {
	p, _ := newTestPool(t, keysOf("sk-a"))
	proveAll(p)
	name := p.Stats()[0].Name
	p.Disable(name)
	p.Enable(name)
	if st := p.Stats()[0].State; st != StateProbing {
		t.Errorf("state after Disable and Enable is %v, want probing", st)
	}
	l := mustAcquire(t, p, &acquireRequest{})
	defer l.release()
	if k, _, _ := p.pick(&acquireRequest{}); k != nil {
		t.Error("a probing key took a second request")
	}
}

// ParseKeys refuses options given where keys belong.
func TestParseKeysRefusesOptionsAsSecrets(t *testing.T) {
	for _, tc := range []struct{ list, want string }{
		{"sk-a0123456789abcdef,weight=2,rpm=60", `entry #2 looks like an option (weight=…); separate a key's options with ';'`},
		{"max=5", "entry #1 looks like an option"},
		{`sk-a0123456789abcdef;name=a;name=b`, "name is given twice"},
	} {
		_, err := ParseKeys(tc.list)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseKeys(%q) = %v, want an error containing %q", tc.list, err, tc.want)
		}
	}
	keys, err := ParseKeys(`sk-a0123456789abcdef;name="team a";account='acct'`)
	if err != nil || keys[0].Name != "team a" || keys[0].Account != "acct" {
		t.Errorf("quoted values: %+v, %v", keys, err)
	}
	// A secret that ends in '=' (base64 padding) is still a secret.
	keys, err = ParseKeys("c2VjcmV0c2VjcmV0c2VjcmV0==;max=2")
	if err != nil || keys[0].Secret != "c2VjcmV0c2VjcmV0c2VjcmV0==" {
		t.Errorf("padded secret: %+v, %v", keys, err)
	}
}
