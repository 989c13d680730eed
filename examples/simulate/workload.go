package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/keypool/keypool/internal/fakeupstream"
)

// The workload is open-loop, as traffic to a service is: requests arrive
// when they arrive, whether or not earlier ones were answered. A setup
// that fails fast therefore cannot finish sooner and look faster; every
// scenario gets the same requests at the same moments, and is judged by
// how many it answered within their deadline.

const chatBody = `{"model":"deepseek-chat","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}`

// arrivals returns when each request arrives, as offsets from the start
// of a run: a Poisson process of rate per second for d, drawn from seed.
// Traffic arrives in random clumps, not evenly spaced.
func arrivals(rate float64, d time.Duration, seed uint64) []time.Duration {
	rng := rand.New(rand.NewPCG(seed, 0x6172726976616c73))
	var out []time.Duration
	for t := 0.0; ; {
		t += rng.ExpFloat64() / rate
		at := time.Duration(t * float64(time.Second))
		if at >= d {
			return out
		}
		out = append(out, at)
	}
}

func secretFor(i int) string { return fmt.Sprintf("sk-sim-%02d-0123456789abcdef", i) }

// simConfig is the simulated DeepSeek: one account per key, each capping
// requests in flight, and the outage if any.
func simConfig(cfg config, secrets []string) fakeupstream.Config {
	sc := fakeupstream.Config{
		Mode:     fakeupstream.DeepSeek,
		Accounts: map[string]fakeupstream.Account{},
		Keys:     map[string]fakeupstream.Key{},
		Latency:  cfg.Latency,
		Jitter:   cfg.Jitter,
		Seed:     cfg.Seed,
	}
	for _, s := range secrets {
		sc.Accounts[s] = fakeupstream.Account{MaxInFlight: cfg.Cap}
		sc.Keys[s] = fakeupstream.Key{}
	}
	if o := cfg.Outage; o != nil {
		sc.Outages = []fakeupstream.Outage{{Account: secrets[o.Key], Start: o.Start, End: o.End, Status: http.StatusServiceUnavailable}}
	}
	return sc
}

// startSimulator starts the simulated provider on loopback, and the
// transport that reaches it. The tests start it in memory instead, to
// run the demo in virtual time.
var startSimulator = func(cfg fakeupstream.Config) (*fakeupstream.Server, http.RoundTripper) {
	return fakeupstream.New(cfg), &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: 30 * time.Second}
}

// runGrace is how long past the last deadline a run may take before it is
// reported as stuck: every request has a deadline, so only a client that
// ignores its context can get there.
const runGrace = 30 * time.Second

// runScenario sends the requests arriving at arr through sc's client, to
// a fresh simulator, and measures what the callers and the upstream saw.
func runScenario(sc scenario, cfg config, arr []time.Duration, p *progress) (*result, error) {
	secrets := make([]string, cfg.Keys)
	for i := range secrets {
		secrets[i] = secretFor(i)
	}
	// The simulator times its outage from its start, so it starts just
	// before the first request.
	sim, base := startSimulator(simConfig(cfg, secrets))
	defer sim.Close()
	if c, ok := base.(interface{ CloseIdleConnections() }); ok {
		defer c.CloseIdleConnections()
	}
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	client, err := sc.client(env{cfg: cfg, secrets: secrets, base: base, onClose: func(f func()) { closers = append(closers, f) }})
	if err != nil {
		return nil, err
	}

	p.begin(sc.name, len(arr))
	rec, err := sendArrivals(client, sim.URL, cfg, arr, p)
	if err != nil {
		p.end(nil)
		return nil, err
	}
	r := rec.result(sc.name, cfg.Duration)
	addUpstreamFigures(r, sim, secrets)
	p.end(r)
	return r, nil
}

// sendArrivals sends one request at each moment of arr, each with its
// own deadline, and records what the callers saw.
func sendArrivals(client *http.Client, url string, cfg config, arr []time.Duration, p *progress) (*recorder, error) {
	rec := newRecorder()
	start := time.Now()
	var wg sync.WaitGroup
	for _, at := range arr {
		if wait := time.Until(start.Add(at)); wait > 0 {
			time.Sleep(wait)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The deadline and the latency count from when the request
			// arrived, not from when it could be sent.
			arrived := start.Add(at)
			ctx, cancel := context.WithDeadline(context.Background(), arrived.Add(cfg.Deadline))
			defer cancel()
			ok := call(ctx, client, url)
			rec.add(at, time.Since(start), ok)
			p.tick(ok)
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	stuck := time.NewTimer(cfg.Deadline + runGrace)
	defer stuck.Stop()
	select {
	case <-finished:
		return rec, nil
	case <-stuck.C:
		return nil, fmt.Errorf("requests still running %v after their deadline", runGrace)
	}
}

// addUpstreamFigures adds to r what the simulator saw.
func addUpstreamFigures(r *result, sim *fakeupstream.Server, secrets []string) {
	total := sim.Total()
	r.Upstream429 = total.RateLimited
	r.Upstream5xx = total.ServerErrors
	r.UpstreamReq = total.Requests
	for i, s := range secrets {
		share := 0.0
		if total.OK > 0 {
			share = float64(sim.Counters(s).OK) / float64(total.OK)
		}
		r.Shares = append(r.Shares, keyShare{Key: fmt.Sprintf("key %d", i), Share: share})
	}
}

// call sends one chat completion and reports whether it succeeded: a 200
// whose body was read to the end before the deadline.
func call(ctx context.Context, client *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader(chatBody))
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err == nil && resp.StatusCode == http.StatusOK
}
