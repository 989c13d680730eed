package main

import (
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeupstream"
)

// Provider B is the second tier of the fallback scenario, added when
// provider A, the simulated DeepSeek, has an outage: another provider
// serving the same model under its own name, with the key in an api-key
// header, slower than A, and with room for the whole load, as a costlier
// fallback usually is. The other scenarios use only A.

// scenarioFallback is keypool with A's keys first and B's as the
// fallback.
const scenarioFallback = "keypool + fallback B"

// fallback is provider B.
type fallback struct {
	Keys    int           `json:"keys"`            // one account each
	Cap     int           `json:"cap_per_account"` // requests in flight an account allows
	Latency time.Duration `json:"latency_ns"`
	Jitter  time.Duration `json:"jitter_ns"`
	// Model is B's name for the callers' model; B knows no other, so a
	// request that was not renamed gets a 404.
	Model string `json:"model"`
}

// The shape of provider B.
const (
	fallbackKeys = 2
	// fallbackModel is how B names the model, as some hosts of DeepSeek's
	// open weights do.
	fallbackModel = "deepseek-ai/DeepSeek-V3"
	// fallbackSlowdown is how much slower B answers than A.
	fallbackSlowdown = 2
	// fallbackHeadroom is B's capacity over the arrival rate, so that B
	// alone carries the load and the queue built up before the outage.
	fallbackHeadroom = 1.5
)

// newFallback sizes provider B for the workload of cfg.
func newFallback(cfg config) *fallback {
	fb := &fallback{Keys: fallbackKeys, Latency: fallbackSlowdown * cfg.Latency, Jitter: fallbackSlowdown * cfg.Jitter, Model: fallbackModel}
	mean := fb.Latency + fb.Jitter/2
	slots := fallbackHeadroom * cfg.Rate * mean.Seconds()
	fb.Cap = max(1, int(math.Ceil(slots/float64(fb.Keys))))
	return fb
}

// capacity is B's aggregate capacity in requests per second.
func (fb *fallback) capacity() float64 {
	mean := fb.Latency + fb.Jitter/2
	if mean <= 0 {
		return math.Inf(1)
	}
	return float64(fb.Keys*fb.Cap) / mean.Seconds()
}

func fallbackSecretFor(i int) string { return fmt.Sprintf("b-sim-key-%d-fedcba9876543210", i) }

// fallbackSimConfig is provider B: its own accounts and latency, and
// only its own model name. It has no outage.
func fallbackSimConfig(cfg config, secrets []string) fakeupstream.Config {
	fb := cfg.Fallback
	sc := fakeupstream.Config{
		Mode:     fakeupstream.DeepSeek,
		Accounts: map[string]fakeupstream.Account{},
		Keys:     map[string]fakeupstream.Key{},
		Models:   []string{fb.Model},
		Latency:  fb.Latency,
		Jitter:   fb.Jitter,
		Seed:     cfg.Seed + 1, // not A's draws
	}
	for _, s := range secrets {
		sc.Accounts[s] = fakeupstream.Account{MaxInFlight: fb.Cap}
		sc.Keys[s] = fakeupstream.Key{}
	}
	return sc
}

// fallbackClient sends through keypool with A's keys at priority 1 and
// B's at 0, each told its account's cap. B's keys rename the model and
// send the secret in api-key; each key's BaseURL takes its requests to
// its provider.
func fallbackClient(e env) (*http.Client, error) {
	if e.b == nil {
		return nil, fmt.Errorf("no provider B in this run")
	}
	var keys []keypool.Key
	for _, s := range e.secrets {
		keys = append(keys, keypool.Key{Secret: s, BaseURL: e.aURL, MaxConcurrent: e.cfg.Cap, Priority: 1})
	}
	fb := e.cfg.Fallback
	for _, s := range e.b.secrets {
		keys = append(keys, keypool.Key{Secret: s, BaseURL: e.b.url, MaxConcurrent: fb.Cap, Priority: 0,
			ModelMap: map[string]string{chatModel: fb.Model}, Auth: keypool.AuthAPIKey})
	}
	pool, err := keypool.New(keys)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: keypool.NewTransport(pool, keypool.WithBase(e.base))}, nil
}
