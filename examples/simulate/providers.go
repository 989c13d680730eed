package main

import (
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/keypool/keypool/internal/fakeupstream"
)

// provider is one running simulated provider and the keys it knows.
type provider struct {
	sim *fakeupstream.Server
	// url is the provider's base URL: where its keys' requests go.
	url string
	// rt reaches the provider.
	rt http.RoundTripper
	// secrets are its keys, one account each.
	secrets []string
	// keyPrefix starts the names of its keys in the table: "" for A's,
	// which are the keys of every scenario, "B " for B's.
	keyPrefix string
}

// startSimulator starts a simulated provider on loopback: its server,
// its base URL and the transport that reaches it. The tests start it in
// memory instead, to run the demo in virtual time, under a URL of its
// own that only its transport reaches.
var startSimulator = func(name string, cfg fakeupstream.Config) (*fakeupstream.Server, string, http.RoundTripper) {
	sim := fakeupstream.New(cfg)
	return sim, sim.URL, &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: 30 * time.Second}
}

// providers are the simulated providers of one run: A, the simulated
// DeepSeek, and B when the run has a fallback.
type providers struct {
	a, b *provider
}

// startProviders starts A, and B if cfg has a fallback. The simulators
// time their outages from their start, so a run starts them just before
// its first request.
func startProviders(cfg config) *providers {
	ps := &providers{a: &provider{}}
	for i := range cfg.Keys {
		ps.a.secrets = append(ps.a.secrets, secretFor(i))
	}
	ps.a.sim, ps.a.url, ps.a.rt = startSimulator(providerA, simConfig(cfg, ps.a.secrets))
	if cfg.Fallback != nil {
		ps.b = &provider{keyPrefix: "B "}
		for i := range cfg.Fallback.Keys {
			ps.b.secrets = append(ps.b.secrets, fallbackSecretFor(i))
		}
		ps.b.sim, ps.b.url, ps.b.rt = startSimulator("B", fallbackSimConfig(cfg, ps.b.secrets))
	}
	return ps
}

// all returns the providers that run, A first.
func (ps *providers) all() []*provider {
	if ps.b == nil {
		return []*provider{ps.a}
	}
	return []*provider{ps.a, ps.b}
}

// env is what a scenario of cfg builds its client from, on these
// providers.
func (ps *providers) env(cfg config, onClose func(func())) env {
	return env{cfg: cfg, secrets: ps.a.secrets, base: ps.base(), aURL: ps.a.url, b: ps.b, onClose: onClose}
}

// close shuts the providers down.
func (ps *providers) close() {
	for _, p := range ps.all() {
		if c, ok := p.rt.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
		p.sim.Close()
	}
}

// base is the transport every scenario sends through: it takes each
// request to the provider its URL names, so that a key's BaseURL decides
// where its requests go, as it would with two real providers.
func (ps *providers) base() http.RoundTripper {
	hosts := byHost{}
	for _, p := range ps.all() {
		hosts[hostOf(p.url)] = p.rt
	}
	return hosts
}

// hostOf returns the host (and port) of a base URL such as
// http://127.0.0.1:8080.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		panic(fmt.Sprintf("simulator URL %q: %v", raw, err))
	}
	return u.Host
}

// byHost sends each request through the transport of its URL's host.
type byHost map[string]http.RoundTripper

func (h byHost) RoundTrip(req *http.Request) (*http.Response, error) {
	rt := h[req.URL.Host]
	if rt == nil {
		if req.Body != nil {
			req.Body.Close() // a RoundTripper closes the body, even on error
		}
		return nil, fmt.Errorf("no simulated provider at %s", req.URL.Host)
	}
	return rt.RoundTrip(req)
}

// addUpstreamFigures adds to r what the providers saw: their answers
// summed, and each key's share of their successes.
func (ps *providers) addUpstreamFigures(r *result) {
	ok := 0
	for _, p := range ps.all() {
		total := p.sim.Total()
		r.Upstream429 += total.RateLimited
		r.Upstream5xx += total.ServerErrors
		r.UpstreamReq += total.Requests
		ok += total.OK
	}
	for _, p := range ps.all() {
		for i, s := range p.secrets {
			share := 0.0
			if ok > 0 {
				share = float64(p.sim.Counters(s).OK) / float64(ok)
			}
			r.Shares = append(r.Shares, keyShare{Key: fmt.Sprintf("%skey %d", p.keyPrefix, i), Share: share})
		}
	}
}
