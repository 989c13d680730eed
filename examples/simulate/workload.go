package main

import (
	"context"
	"encoding/json"
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

// chatModel is the model every request asks for, by A's name for it.
const chatModel = "deepseek-chat"

const chatBody = `{"model":"` + chatModel + `","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}`

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

// simConfig is provider A, the simulated DeepSeek: one account per key,
// each capping requests in flight, and the outage if any: of one key's
// account, or of every account.
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
		account := "" // every account: the whole provider
		if o.Key != nil {
			account = secrets[*o.Key]
		}
		sc.Outages = []fakeupstream.Outage{{Account: account, Start: o.Start, End: o.End, Status: http.StatusServiceUnavailable}}
	}
	return sc
}

// runGrace is how long past the last deadline a run may take before it is
// reported as stuck: every request has a deadline, so only a client that
// ignores its context can get there.
const runGrace = 30 * time.Second

// runScenario sends the requests arriving at arr through sc's client, to
// fresh simulators, and measures what the callers and the upstream saw.
func runScenario(sc scenario, cfg config, arr []time.Duration, p *progress) (*result, error) {
	ps := startProviders(cfg)
	defer ps.close()
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	client, err := sc.client(ps.env(cfg, func(f func()) { closers = append(closers, f) }))
	if err != nil {
		return nil, err
	}

	p.begin(sc.name, len(arr))
	rec, err := sendArrivals(client, ps.a.url, cfg, arr, p)
	if err != nil {
		p.end(nil)
		return nil, err
	}
	r := rec.result(sc.name, cfg.Duration)
	ps.addUpstreamFigures(r)
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
			ok, byB := call(ctx, client, url)
			rec.add(at, time.Since(start), ok, byB)
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

// call sends one chat completion and reports whether it succeeded: a 200
// whose body was read to the end before the deadline; and if so, whether
// provider B served it, which its answer tells by naming B's model.
func call(ctx context.Context, client *http.Client, url string) (ok, byB bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader(chatBody))
	if err != nil {
		return false, false
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return false, false
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return false, false
	}
	var answer struct {
		Model string `json:"model"`
	}
	return true, json.Unmarshal(body, &answer) == nil && answer.Model == fallbackModel
}
