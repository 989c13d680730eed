package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/cenkalti/backoff/v4"
	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeupstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Secrets of the tests' keys, each its own account.
const (
	good    = "sk-ant-good-000000000001"
	revoked = "sk-ant-revoked-000000002"
	busy    = "sk-ant-busy-000000000003"
)

// withoutEnv hides any KEYPOOL_ variables of the environment the tests
// run in, so that run uses the simulator.
func withoutEnv(t *testing.T) {
	for _, v := range []string{"KEYPOOL_KEYS", "KEYPOOL_BASE_URL", "KEYPOOL_MODEL"} {
		t.Setenv(v, "")
	}
}

func TestRunUsesTheSimulator(t *testing.T) {
	withoutEnv(t)
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"using the simulator", "Hello from the simulator.\n", "tok0 tok1 tok2\n", "sk-ant-…0001", "sk-ant-…0002"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	keys, _ := keypool.ParseKeys(simulatedKeys)
	for _, k := range keys {
		if strings.Contains(got, k.Secret) {
			t.Errorf("output shows a secret:\n%s", got)
		}
	}
}

func TestRunWithKeysFromTheEnvironment(t *testing.T) {
	sim := fakeupstream.New(fakeupstream.Config{Keys: map[string]fakeupstream.Key{good: {}}})
	t.Cleanup(sim.Close)
	// run sends through http.DefaultTransport to a provider it is told of.
	t.Cleanup(http.DefaultTransport.(*http.Transport).CloseIdleConnections)
	t.Setenv("KEYPOOL_KEYS", good+";max=4")
	t.Setenv("KEYPOOL_BASE_URL", sim.URL)
	t.Setenv("KEYPOOL_MODEL", "claude-test")
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "using the simulator") {
		t.Errorf("run used its own simulator:\n%s", out.String())
	}
	c := sim.Counters(good)
	if c.OK != 2 || c.Models["claude-test"] != 2 || c.AuthHeaders["X-Api-Key"] != 2 {
		t.Errorf("the provider saw %+v; want 2 answered requests for claude-test, keyed by X-Api-Key", c)
	}
}

// pooled starts a simulator with cfg, whose Keys are made from secrets
// when cfg has none, and returns it, a pool of those keys and an
// Anthropic client sending through the pool with the transport options
// topts. The client does not retry unless copts say so.
func pooled(t *testing.T, cfg fakeupstream.Config, secrets []string, topts []keypool.TransportOption, copts ...option.RequestOption) (*fakeupstream.Server, *keypool.Pool, anthropic.Client) {
	t.Helper()
	if cfg.Keys == nil {
		cfg.Keys = map[string]fakeupstream.Key{}
		for _, s := range secrets {
			cfg.Keys[s] = fakeupstream.Key{}
		}
	}
	sim := fakeupstream.New(cfg)
	t.Cleanup(sim.Close)
	keys := make([]keypool.Key, len(secrets))
	for i, s := range secrets {
		keys[i] = keypool.Key{Secret: s, Name: nameOf(s), MaxConcurrent: 4}
	}
	pool, err := keypool.New(keys)
	if err != nil {
		t.Fatal(err)
	}
	topts = append([]keypool.TransportOption{keypool.WithAuth(keypool.AuthXAPIKey), keypool.WithBase(sim.Client().Transport)}, topts...)
	return sim, pool, newClient(keypool.NewTransport(pool, topts...), sim.URL, copts...)
}

// call sends one Messages request, streamed or not, and checks that the
// answer carries the simulator's text.
func call(t *testing.T, client anthropic.Client, stream bool) {
	t.Helper()
	ctx, params := context.Background(), request("claude-test")
	var got, want string
	var err error
	if stream {
		got, err = streamText(ctx, client, params)
		want = "tok0 "
	} else {
		var msg *anthropic.Message
		if msg, err = client.Messages.New(ctx, params); err == nil {
			got = text(msg)
		}
		want = "Hello from the simulator."
	}
	if err != nil {
		t.Fatalf("stream=%v: %v", stream, err)
	}
	if got != want {
		t.Fatalf("stream=%v: got %q, want %q", stream, got, want)
	}
}

// nameOf names the key with that secret in the pool: "good", "revoked"
// or "busy".
func nameOf(secret string) string { return strings.Split(secret, "-")[2] }

// stateOf returns the Stats of the key with that secret.
func stateOf(t *testing.T, pool *keypool.Pool, secret string) keypool.KeyStats {
	t.Helper()
	for _, st := range pool.Stats() {
		if st.Name == nameOf(secret) {
			return st
		}
	}
	t.Fatalf("no key named %s", nameOf(secret))
	return keypool.KeyStats{}
}

// callsUntil makes calls, streamed or not, each of which must succeed,
// until tried reports that the faulty key has had its request: calls
// alternate between the keys of a pool of two, so it takes a few at
// most. It returns how many calls it made.
func callsUntil(t *testing.T, client anthropic.Client, stream bool, tried func() bool) int {
	t.Helper()
	for n := 1; n <= 4; n++ {
		call(t, client, stream)
		if tried() {
			return n
		}
	}
	t.Fatal("4 calls and the faulty key never had a request: the pool did not spread them over its 2 keys")
	return 0
}

func TestRevokedKeyIsDisabledAndCallsSucceed(t *testing.T) {
	for _, stream := range []bool{false, true} {
		cfg := fakeupstream.Config{Keys: map[string]fakeupstream.Key{good: {}, revoked: {Fault: fakeupstream.FaultRevoked}}}
		sim, pool, client := pooled(t, cfg, []string{good, revoked}, nil)
		n := callsUntil(t, client, stream, func() bool { return sim.Counters(revoked).Requests > 0 })
		// The pool no longer sends the revoked key.
		call(t, client, stream)
		call(t, client, stream)

		if c := sim.Counters(revoked); c.Requests != 1 || c.Unauthorized != 1 {
			t.Errorf("stream=%v: the revoked key's account saw %+v; want its one request refused", stream, c)
		}
		if c := sim.Counters(good); c.OK != n+2 {
			t.Errorf("stream=%v: the good key's account answered %d of %d calls", stream, c.OK, n+2)
		}
		if st := stateOf(t, pool, revoked); st.State != keypool.StateDisabled {
			t.Errorf("stream=%v: the revoked key is %v, want disabled", stream, st.State)
		}
		// The SDK's own key never left the process, and every key went
		// in x-api-key, as Anthropic wants it.
		if c := sim.Counters("unused"); c.Requests != 0 {
			t.Errorf("stream=%v: the SDK's placeholder key reached the provider %d times", stream, c.Requests)
		}
		if h := sim.Total().AuthHeaders; len(h) != 1 || h["X-Api-Key"] != n+3 {
			t.Errorf("stream=%v: keys came in %v; want X-Api-Key only", stream, h)
		}
	}
}

func TestOverloadedAnswerFailsOverToTheOtherKey(t *testing.T) {
	for _, stream := range []bool{false, true} {
		cfg := fakeupstream.Config{Outages: []fakeupstream.Outage{
			{Account: busy, Status: fakeupstream.StatusOverloaded, End: time.Hour},
		}}
		sim, pool, client := pooled(t, cfg, []string{good, busy}, nil)
		n := callsUntil(t, client, stream, func() bool { return sim.Counters(busy).Requests > 0 })

		if c := sim.Counters(busy); c.ServerErrors != 1 || c.OK != 0 {
			t.Errorf("stream=%v: the overloaded account saw %+v; want one 529", stream, c)
		}
		if c := sim.Counters(good); c.OK != n {
			t.Errorf("stream=%v: the other account answered %d of %d calls", stream, c.OK, n)
		}
		if st := stateOf(t, pool, busy); st.Failures != 1 || st.Successes != 0 {
			t.Errorf("stream=%v: the overloaded key's stats are %+v; want one failure", stream, st)
		}
	}
}

func TestRateLimitCoolsTheAccountWhileTheOtherServes(t *testing.T) {
	// The first request of busy's account empties its bucket, so its
	// next gets a 429 rate_limit_error with retry-after: 60.
	cfg := fakeupstream.Config{
		Mode:     fakeupstream.OpenAI,
		Accounts: map[string]fakeupstream.Account{busy: {RPM: 1}},
	}
	sim, pool, client := pooled(t, cfg, []string{good, busy}, nil)
	n := 0
	for sim.Counters(busy).RateLimited == 0 {
		if n++; n > 6 {
			t.Fatal("6 calls and the account with 1 RPM was never refused")
		}
		call(t, client, n%2 == 0)
	}
	st := stateOf(t, pool, busy)
	if st.State != keypool.StateCooling || st.CooldownUntil.IsZero() {
		t.Fatalf("after its 429 the account is %v (cooldown until %v); want cooling", st.State, st.CooldownUntil)
	}
	// While it cools, every call goes to the other key: busy's account
	// sees no more requests.
	before := sim.Counters(busy).Requests
	for i := range 4 {
		call(t, client, i%2 == 0)
	}
	if after := sim.Counters(busy).Requests; after != before {
		t.Errorf("the cooling account got %d more requests", after-before)
	}
	if c := sim.Counters(good); c.OK != n+4-1 {
		t.Errorf("the other account answered %d of %d calls", c.OK, n+4-1)
	}
}

func TestEveryKeyOverloadedTheSDKGetsOneAnswerAndDoesNotRetry(t *testing.T) {
	// A provider-wide overload. keypool makes its 2 attempts and hands
	// the last 529 back marked x-should-retry: false, which the SDK
	// obeys although its own retries are on.
	cfg := fakeupstream.Config{Outages: []fakeupstream.Outage{{Status: fakeupstream.StatusOverloaded, End: time.Hour}}}
	topts := []keypool.TransportOption{
		keypool.WithMaxAttempts(2),
		keypool.WithBackoff(func() backoff.BackOff { return &backoff.ZeroBackOff{} }),
	}
	sim, _, client := pooled(t, cfg, []string{good, busy}, topts, option.WithMaxRetries(3))
	_, err := client.Messages.New(context.Background(), request("claude-test"))
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("got %v; want an *anthropic.Error", err)
	}
	if apiErr.StatusCode != fakeupstream.StatusOverloaded || apiErr.Type() != "overloaded_error" {
		t.Errorf("got %d %q; want 529 overloaded_error", apiErr.StatusCode, apiErr.Type())
	}
	if n := sim.Total().Requests; n != 2 {
		t.Errorf("the provider saw %d requests; want keypool's 2 attempts and no retry by the SDK", n)
	}
	if msg := err.Error(); strings.Contains(msg, good) || strings.Contains(msg, busy) {
		t.Errorf("the error shows a secret: %s", msg)
	}
}

func TestBrokenStreamIsNotReplayed(t *testing.T) {
	// The stream breaks after its first chunk, once the SDK has it: the
	// caller gets the error, and no other key is asked to start over.
	cfg := fakeupstream.Config{
		Keys:         map[string]fakeupstream.Key{good: {BreakAfterFrames: 1}, busy: {}},
		StreamChunks: 3,
	}
	sim, _, client := pooled(t, cfg, []string{good, busy}, nil)
	var failed []error
	for range 2 { // one of the 2 goes to the key whose streams break
		if _, err := streamText(context.Background(), client, request("claude-test")); err != nil {
			failed = append(failed, err)
		}
	}
	if c := sim.Counters(good); c.Requests != 1 {
		t.Fatalf("the breaking key had %d requests; want 1", c.Requests)
	}
	if len(failed) != 1 {
		t.Errorf("%d of 2 streams failed (%v); want the broken one", len(failed), failed)
	}
	if n := sim.Total().Requests; n != 2 {
		t.Errorf("the provider saw %d requests for 2 streams; a broken stream was replayed", n)
	}
}
