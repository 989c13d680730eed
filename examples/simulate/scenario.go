package main

import (
	"net/http"

	"github.com/keypool/keypool"
)

// The scenarios' names, as the table shows them.
const (
	scenarioSingle  = "one key"
	scenarioNaive   = "naive round robin"
	scenarioKeypool = "keypool"
	// scenarioUnknown is keypool not told the caps: it learns them.
	scenarioUnknown = "keypool, caps unknown"
	// scenarioFallback, with a second provider, is in fallback.go.
)

// scenario is one way of sending the workload to the simulated provider:
// a name and the client every request goes through. To add a scenario,
// add an entry to scenarios; the workload, the table and the chart pick
// it up.
type scenario struct {
	name string
	// client builds the scenario's client for one run.
	client func(env) (*http.Client, error)
}

// env is what a scenario builds its client from.
type env struct {
	cfg config
	// secrets holds the keys: secrets[i] is key i, with an account of its
	// own that allows cfg.Cap requests in flight.
	secrets []string
	// base reaches the simulators, each request the one its URL names.
	// Every scenario sends through one like it, so that only the key
	// handling differs.
	base http.RoundTripper
	// aURL is provider A's base URL, where every request is sent.
	aURL string
	// b is provider B, nil unless the run has a fallback (see
	// fallback.go).
	b *provider
	// onClose registers what to release when the run ends.
	onClose func(func())
}

// scenarios returns the scenarios run, in the order of the table.
func scenarios(cfg config) []scenario {
	ss := []scenario{
		{scenarioSingle, func(e env) (*http.Client, error) {
			return &http.Client{Transport: &singleKey{base: e.base, secret: e.secrets[e.cfg.singleKey()]}}, nil
		}},
		{scenarioNaive, func(e env) (*http.Client, error) {
			return &http.Client{Transport: &roundRobin{base: e.base, secrets: e.secrets, retries: 3}}, nil
		}},
		{scenarioKeypool, func(e env) (*http.Client, error) { return keypoolClient(e, true) }},
		{scenarioUnknown, func(e env) (*http.Client, error) { return keypoolClient(e, false) }},
	}
	if cfg.Fallback != nil {
		ss = append(ss, scenario{scenarioFallback, fallbackClient})
	}
	if cfg.Replicas > 1 {
		ss = append(ss,
			scenario{replicasName(cfg.Replicas, false), func(e env) (*http.Client, error) { return replicasClient(e, false) }},
			scenario{replicasName(cfg.Replicas, true), func(e env) (*http.Client, error) { return replicasClient(e, true) }})
	}
	return ss
}

// singleKey is the key the one-key scenario uses: the one with the
// outage if one key has one, since a setup with one key has no other to
// turn to; otherwise key 0.
func (c config) singleKey() int {
	if c.Outage != nil && c.Outage.Key != nil {
		return *c.Outage.Key
	}
	return 0
}

// keypoolClient sends through keypool with library defaults, told each
// account's cap or not.
func keypoolClient(e env, toldCaps bool) (*http.Client, error) {
	keys := make([]keypool.Key, len(e.secrets))
	for i, s := range e.secrets {
		keys[i] = keypool.Key{Secret: s}
		if toldCaps {
			keys[i].MaxConcurrent = e.cfg.Cap
		}
	}
	pool, err := keypool.New(keys)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: keypool.NewTransport(pool, keypool.WithBase(e.base))}, nil
}

// scenarioNames returns the names of ss, in order.
func scenarioNames(ss []scenario) []string {
	names := make([]string, len(ss))
	for i, s := range ss {
		names[i] = s.name
	}
	return names
}
