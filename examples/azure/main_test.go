package main

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeupstream"
	"github.com/openai/openai-go/v3"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Secrets of the tests' keys, each its own account.
const (
	good = "azure-good-00000000000001"
	busy = "azure-busy-00000000000002"
)

const apiVersion = "2024-10-21"

func TestRunUsesTheSimulator(t *testing.T) {
	for _, v := range []string{"KEYPOOL_KEYS", "KEYPOOL_BASE_URL", "KEYPOOL_AZURE_DEPLOYMENT", "KEYPOOL_AZURE_API_VERSION"} {
		t.Setenv(v, "")
	}
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"using the simulator", "Hello from the simulator.\n", "tok0 tok1 tok2\n", "azure-…0001", "azure-…0002"} {
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

func TestRunWithKeysOfTwoResources(t *testing.T) {
	// Two Azure resources, each with its own key; the second key's base
	// option sends its requests to its own resource.
	east := fakeupstream.New(fakeupstream.Config{Keys: map[string]fakeupstream.Key{good: {}}})
	t.Cleanup(east.Close)
	west := fakeupstream.New(fakeupstream.Config{Keys: map[string]fakeupstream.Key{busy: {}}})
	t.Cleanup(west.Close)
	// run sends through http.DefaultTransport to a provider it is told of.
	t.Cleanup(http.DefaultTransport.(*http.Transport).CloseIdleConnections)
	t.Setenv("KEYPOOL_KEYS", good+", "+busy+";base="+west.URL)
	t.Setenv("KEYPOOL_BASE_URL", east.URL)
	t.Setenv("KEYPOOL_AZURE_DEPLOYMENT", "gpt-test")
	t.Setenv("KEYPOOL_AZURE_API_VERSION", apiVersion)
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "using the simulator") {
		t.Errorf("run used its own simulator:\n%s", out.String())
	}
	// Each resource served one of the two requests, with its own key
	// only, for the deployment, keyed by api-key.
	for _, r := range []struct {
		name       string
		sim        *fakeupstream.Server
		own, other string
	}{{"east", east, good, busy}, {"west", west, busy, good}} {
		c := r.sim.Counters(r.own)
		if c.OK != 1 || c.Models["gpt-test"] != 1 || c.AuthHeaders["Api-Key"] != 1 {
			t.Errorf("%s saw %+v from its key; want 1 answered request for gpt-test, keyed by Api-Key", r.name, c)
		}
		if n := r.sim.Counters(r.other).Requests; n != 0 {
			t.Errorf("%s got %d requests with the other resource's key", r.name, n)
		}
	}
}

// sent is what one attempt sent upstream, as keypool sent it, and the
// answer it got.
type sent struct {
	path, apiVersion string
	header           http.Header
	status           int
	retryAfterMs     string
}

// recorder is a base transport that records every attempt.
type recorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	log  []sent
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	s := sent{path: req.URL.Path, apiVersion: req.URL.Query().Get("api-version"), header: req.Header.Clone()}
	resp, err := r.next.RoundTrip(req)
	if err == nil {
		s.status, s.retryAfterMs = resp.StatusCode, resp.Header.Get("Retry-After-Ms")
	}
	r.mu.Lock()
	r.log = append(r.log, s)
	r.mu.Unlock()
	return resp, err
}

func (r *recorder) attempts() []sent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sent(nil), r.log...)
}

// pooled starts a simulator with cfg, serving secrets, and returns it, a
// pool of those keys, an Azure client sending through the pool, and the
// recorder of what the pool sent.
func pooled(t *testing.T, cfg fakeupstream.Config, secrets ...string) (*fakeupstream.Server, *keypool.Pool, openai.Client, *recorder) {
	t.Helper()
	cfg.Keys = map[string]fakeupstream.Key{}
	keys := make([]keypool.Key, len(secrets))
	for i, s := range secrets {
		cfg.Keys[s] = fakeupstream.Key{}
		keys[i] = keypool.Key{Secret: s, Name: nameOf(s), MaxConcurrent: 4}
	}
	sim := fakeupstream.New(cfg)
	t.Cleanup(sim.Close)
	pool, err := keypool.New(keys)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{next: sim.Client().Transport}
	rt := keypool.NewTransport(pool, keypool.WithAuth(keypool.AuthAPIKey), keypool.WithBase(rec))
	return sim, pool, newClient(rt, sim.URL, apiVersion), rec
}

// nameOf names the key with that secret in the pool: "good" or "busy".
func nameOf(secret string) string { return strings.Split(secret, "-")[1] }

// call sends one chat completion, streamed or not, to the deployment
// gpt-test and checks that the answer carries the simulator's text.
func call(t *testing.T, client openai.Client, stream bool) {
	t.Helper()
	ctx, params := context.Background(), request("gpt-test")
	var got, want string
	var err error
	if stream {
		got, err = streamText(ctx, client, params)
		want = "tok0 "
	} else {
		var resp *openai.ChatCompletion
		if resp, err = client.Chat.Completions.New(ctx, params); err == nil {
			got = resp.Choices[0].Message.Content
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

func TestTheKeyGoesInApiKeyOnTheDeploymentPath(t *testing.T) {
	// A key the client read from its environment is dropped, not sent.
	t.Setenv("OPENAI_API_KEY", "sk-from-the-environment")
	_, _, client, rec := pooled(t, fakeupstream.Config{}, good)
	call(t, client, false)
	call(t, client, true)

	attempts := rec.attempts()
	if len(attempts) != 2 {
		t.Fatalf("%d attempts; want 2", len(attempts))
	}
	for i, a := range attempts {
		if a.path != "/openai/deployments/gpt-test/chat/completions" || a.apiVersion != apiVersion {
			t.Errorf("attempt %d went to %s?api-version=%s", i, a.path, a.apiVersion)
		}
		if got := a.header.Values("Api-Key"); len(got) != 1 || got[0] != good {
			t.Errorf("attempt %d: api-key is %d value(s), not the pool's key", i, len(got))
		}
		for _, h := range []string{"Authorization", "X-Api-Key"} {
			if a.header.Get(h) != "" {
				t.Errorf("attempt %d carries %s", i, h)
			}
		}
	}
}

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

func TestRateLimitWithRetryAfterMsCoolsTheAccountWhileTheOtherServes(t *testing.T) {
	// In OpenAI mode busy's account allows 1 request a minute: its second
	// gets a 429 with retry-after-ms, as Azure sends it.
	cfg := fakeupstream.Config{
		Mode:     fakeupstream.OpenAI,
		Accounts: map[string]fakeupstream.Account{busy: {RPM: 1}},
	}
	sim, pool, client, rec := pooled(t, cfg, good, busy)
	n := 0
	for sim.Counters(busy).RateLimited == 0 {
		if n++; n > 6 {
			t.Fatal("6 calls and the account with 1 RPM was never refused")
		}
		call(t, client, n%2 == 0)
	}
	var refused []sent
	for _, a := range rec.attempts() {
		if a.status == http.StatusTooManyRequests {
			refused = append(refused, a)
		}
	}
	if len(refused) != 1 || refused[0].retryAfterMs == "" || refused[0].header.Get("Api-Key") != busy {
		t.Fatalf("%d attempts refused; want one of busy's, with retry-after-ms", len(refused))
	}
	if st := stateOf(t, pool, busy); st.State != keypool.StateCooling {
		t.Fatalf("after its 429 the account is %v; want cooling", st.State)
	}

	// While it cools every call goes to the other key.
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
	if h := sim.Total().AuthHeaders; len(h) != 1 || h["Api-Key"] != n+4+1 {
		t.Errorf("keys came in %v; want Api-Key only", h)
	}
}
