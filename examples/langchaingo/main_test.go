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
	"github.com/tmc/langchaingo/llms/openai"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Secrets of the tests' keys, each its own account.
const (
	good    = "sk-good-0000000000000001"
	revoked = "sk-revoked-0000000000002"
)

func TestRunUsesTheSimulator(t *testing.T) {
	for _, v := range []string{"KEYPOOL_KEYS", "KEYPOOL_BASE_URL", "KEYPOOL_MODEL"} {
		t.Setenv(v, "")
	}
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"using the simulator", "Hello from the simulator.\n", "tok0 tok1 tok2\n", "sk-demo-…0001", "sk-demo-…0002"} {
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
	t.Setenv("KEYPOOL_BASE_URL", sim.URL+"/v1")
	t.Setenv("KEYPOOL_MODEL", "model-test")
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "using the simulator") {
		t.Errorf("run used its own simulator:\n%s", out.String())
	}
	c := sim.Counters(good)
	if c.OK != 2 || c.Models["model-test"] != 2 || c.AuthHeaders["Authorization"] != 2 {
		t.Errorf("the provider saw %+v; want 2 answered requests for model-test, keyed by Authorization", c)
	}
}

// recorder is a base transport that records the Authorization headers
// of every attempt, as keypool sent them.
type recorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	auth [][]string
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.auth = append(r.auth, req.Header.Values("Authorization"))
	r.mu.Unlock()
	return r.next.RoundTrip(req)
}

// sent returns the Authorization headers of every attempt so far.
func (r *recorder) sent() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]string(nil), r.auth...)
}

// pooled starts a simulator with cfg, whose Keys are made from secrets
// when cfg has none, and returns it, a pool of those keys, a langchaingo
// client sending through the pool, and the recorder of what it sent.
func pooled(t *testing.T, cfg fakeupstream.Config, secrets ...string) (*fakeupstream.Server, *keypool.Pool, *openai.LLM, *recorder) {
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
		keys[i] = keypool.Key{Secret: s, Name: strings.Split(s, "-")[1], MaxConcurrent: 4}
	}
	pool, err := keypool.New(keys)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{next: sim.Client().Transport}
	llm, err := newLLM(keypool.NewTransport(pool, keypool.WithBase(rec)), sim.URL+"/v1", "model-test")
	if err != nil {
		t.Fatal(err)
	}
	return sim, pool, llm, rec
}

// call sends one prompt, streamed or not, and checks the answer.
func call(t *testing.T, llm *openai.LLM, stream bool) {
	t.Helper()
	want := "Hello from the simulator."
	if stream {
		want = "tok0 "
	}
	got, err := generate(context.Background(), llm, stream)
	if err != nil {
		t.Fatalf("stream=%v: %v", stream, err)
	}
	if got != want {
		t.Fatalf("stream=%v: got %q, want %q", stream, got, want)
	}
}

func TestThePoolKeyReplacesThePlaceholder(t *testing.T) {
	sim, _, llm, rec := pooled(t, fakeupstream.Config{}, good)
	call(t, llm, false)
	call(t, llm, true)
	auth := rec.sent()
	if len(auth) != 2 {
		t.Fatalf("%d attempts; want 2", len(auth))
	}
	for i, v := range auth {
		if len(v) != 1 || v[0] != "Bearer "+good {
			t.Errorf("attempt %d: Authorization holds %d value(s), not the pool's key", i, len(v))
		}
	}
	if c := sim.Counters(good); c.OK != 2 || c.AuthHeaders["Authorization"] != 2 {
		t.Errorf("the provider saw %+v from the pool's key; want 2 answered requests", c)
	}
	if n := sim.Counters("unused").Requests; n != 0 {
		t.Errorf("the client's placeholder reached the provider %d times", n)
	}
}

func TestRevokedKeyFailsOverAndIsDisabled(t *testing.T) {
	// langchaingo does not retry: a call succeeds only because keypool
	// tries the other key.
	for _, stream := range []bool{false, true} {
		cfg := fakeupstream.Config{Keys: map[string]fakeupstream.Key{good: {}, revoked: {Fault: fakeupstream.FaultRevoked}}}
		sim, pool, llm, _ := pooled(t, cfg, good, revoked)
		n := 0
		for sim.Counters(revoked).Requests == 0 {
			if n++; n > 4 {
				t.Fatal("4 calls and the revoked key never had a request: the pool did not spread them over its 2 keys")
			}
			call(t, llm, stream)
		}
		call(t, llm, stream)
		if c := sim.Counters(revoked); c.Requests != 1 || c.Unauthorized != 1 {
			t.Errorf("stream=%v: the revoked key's account saw %+v; want its one request refused", stream, c)
		}
		if c := sim.Counters(good); c.OK != n+1 {
			t.Errorf("stream=%v: the good key's account answered %d of %d calls", stream, c.OK, n+1)
		}
		for _, st := range pool.Stats() {
			if st.Name == "revoked" && st.State != keypool.StateDisabled {
				t.Errorf("stream=%v: the revoked key is %v, want disabled", stream, st.State)
			}
		}
	}
}

func TestTheCallerGetsTheProvidersLastAnswer(t *testing.T) {
	// Both keys' accounts are out of quota: keypool disables them and
	// hands back the last 429, which langchaingo reports by its status
	// and message.
	cfg := fakeupstream.Config{Keys: map[string]fakeupstream.Key{
		good: {Fault: fakeupstream.FaultQuota}, revoked: {Fault: fakeupstream.FaultQuota},
	}}
	sim, _, llm, _ := pooled(t, cfg, good, revoked)
	_, err := generate(context.Background(), llm, false)
	if err == nil {
		t.Fatal("the call succeeded")
	}
	msg := err.Error()
	if !strings.Contains(msg, "429") || !strings.Contains(msg, "exceeded your current quota") {
		t.Errorf("error %q; want the provider's 429 and its message", msg)
	}
	if strings.Contains(msg, good) || strings.Contains(msg, revoked) {
		t.Errorf("the error shows a secret: %s", msg)
	}
	if n := sim.Total().Requests; n != 2 {
		t.Errorf("the provider saw %d requests; want one per key", n)
	}
}
