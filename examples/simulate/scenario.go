package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeupstream"
)

// The ways the workload is run.
const (
	scenarioSingle  = "one key"
	scenarioNaive   = "naive round robin"
	scenarioKeypool = "keypool"
	// scenarioUnknown is keypool not told the caps: it learns them.
	scenarioUnknown = "keypool, caps unknown"
)

const chatBody = `{"model":"deepseek-chat","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}`

// binWidth is the resolution of the timeline.
const binWidth = 500 * time.Millisecond

// scenarioTimeout stops a scenario that runs far longer than it should.
const scenarioTimeout = 2 * time.Minute

// result is what one scenario measured.
type result struct {
	Name        string        `json:"name"`
	Requests    int           `json:"requests"`
	Succeeded   int           `json:"succeeded"`
	Errors      int           `json:"errors"`       // seen by callers
	Upstream429 int           `json:"upstream_429"` // sent by the upstream
	UpstreamReq int           `json:"upstream_requests"`
	Elapsed     time.Duration `json:"elapsed_ns"`
	Goodput     float64       `json:"goodput_rps"`
	P50         time.Duration `json:"p50_ns"` // of successful requests
	P99         time.Duration `json:"p99_ns"`
	Shares      []keyShare    `json:"key_shares"`
	Timeline    []bin         `json:"timeline"`
}

// keyShare is a key's part of the successful requests.
type keyShare struct {
	Key   string  `json:"key"`
	Share float64 `json:"share"`
}

// bin is the outcomes in one slice of time, as rates per second.
type bin struct {
	T           float64 `json:"t"` // seconds since the start, at the bin's end
	OK          float64 `json:"ok_per_s"`
	Errors      float64 `json:"errors_per_s"`
	Upstream429 float64 `json:"upstream_429_per_s"`
}

func secretFor(i int) string { return fmt.Sprintf("sk-sim-%02d-0123456789abcdef", i) }

func runScenario(name string, cfg config, bar *progressBar) (*result, error) {
	simCfg := fakeupstream.Config{
		Mode:     fakeupstream.DeepSeek,
		Accounts: map[string]fakeupstream.Account{},
		Keys:     map[string]fakeupstream.Key{},
		Latency:  cfg.Latency,
		Jitter:   cfg.Jitter,
		Seed:     cfg.Seed,
	}
	secrets := make([]string, cfg.Keys)
	for i := range secrets {
		secrets[i] = secretFor(i)
		simCfg.Accounts[secrets[i]] = fakeupstream.Account{MaxInFlight: cfg.Cap}
		simCfg.Keys[secrets[i]] = fakeupstream.Key{}
	}
	if o := cfg.Outage; o != nil {
		simCfg.Outages = []fakeupstream.Outage{{Account: secrets[o.Key], Start: o.Start, End: o.End, Status: http.StatusServiceUnavailable}}
	}
	sim := fakeupstream.New(simCfg)
	defer sim.Close()

	// One connection pool, sized for the callers, under every scenario.
	base := &http.Transport{MaxIdleConns: 4 * cfg.Callers, MaxIdleConnsPerHost: 4 * cfg.Callers, IdleConnTimeout: 30 * time.Second}
	defer base.CloseIdleConnections()
	var client *http.Client
	switch name {
	case scenarioSingle:
		client = &http.Client{Transport: &singleKey{base: base, secret: secrets[0]}}
	case scenarioNaive:
		client = &http.Client{Transport: &roundRobin{base: base, secrets: secrets, retries: 3}}
	case scenarioKeypool, scenarioUnknown:
		keys := make([]keypool.Key, len(secrets))
		for i, s := range secrets {
			keys[i] = keypool.Key{Secret: s}
			if name == scenarioKeypool {
				keys[i].MaxConcurrent = cfg.Cap
			}
		}
		pool, err := keypool.New(keys)
		if err != nil {
			return nil, err
		}
		client = &http.Client{Transport: keypool.NewTransport(pool, keypool.WithBase(base))}
	default:
		return nil, fmt.Errorf("unknown scenario %q", name)
	}

	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	rec := newRecorder()
	bar.begin(name, cfg.Requests, cfg.Duration)
	start := time.Now()
	stopSampling := rec.sampleUpstream(start, sim)
	var issued atomic.Int64
	var wg sync.WaitGroup
	for range cfg.Callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if cfg.Requests > 0 {
					if issued.Add(1) > int64(cfg.Requests) {
						return
					}
				} else if time.Since(start) >= cfg.Duration {
					return
				}
				t0 := time.Now()
				ok := call(ctx, client, sim.URL)
				rec.add(start, t0, time.Now(), ok)
				bar.tick(ok)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopSampling()
	bar.end()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("did not finish within %v", scenarioTimeout)
	}

	r := rec.result(name, elapsed)
	total := sim.Total()
	r.Upstream429 = total.RateLimited
	r.UpstreamReq = total.Requests
	for i, s := range secrets {
		share := 0.0
		if total.OK > 0 {
			share = float64(sim.Counters(s).OK) / float64(total.OK)
		}
		r.Shares = append(r.Shares, keyShare{Key: fmt.Sprintf("key %d", i), Share: share})
	}
	return r, nil
}

// call sends one chat completion and reports whether it succeeded.
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

// recorder gathers outcomes as callers finish requests.
type recorder struct {
	mu        sync.Mutex
	latencies []time.Duration // of successes
	ok, errs  []int           // per bin
	limited   []int           // upstream 429s per bin
	requests  int
}

func newRecorder() *recorder { return &recorder{} }

func (r *recorder) add(start, t0, t1 time.Time, ok bool) {
	i := int(t1.Sub(start) / binWidth)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	for len(r.ok) <= i {
		r.ok, r.errs = append(r.ok, 0), append(r.errs, 0)
	}
	if ok {
		r.ok[i]++
		r.latencies = append(r.latencies, t1.Sub(t0))
	} else {
		r.errs[i]++
	}
}

// sampleUpstream records the upstream's 429s per bin until stopped.
func (r *recorder) sampleUpstream(start time.Time, sim *fakeupstream.Server) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(binWidth)
		defer t.Stop()
		last := 0
		sample := func() {
			n := sim.Total().RateLimited
			r.mu.Lock()
			r.limited = append(r.limited, n-last)
			r.mu.Unlock()
			last = n
		}
		for {
			select {
			case <-t.C:
				sample()
			case <-done:
				sample()
				return
			}
		}
	}()
	return func() { close(done); <-finished }
}

func (r *recorder) result(name string, elapsed time.Duration) *result {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := &result{Name: name, Requests: r.requests, Elapsed: elapsed}
	for i := range r.ok {
		res.Succeeded += r.ok[i]
		res.Errors += r.errs[i]
	}
	res.Goodput = float64(res.Succeeded) / elapsed.Seconds()
	slices.Sort(r.latencies)
	res.P50, res.P99 = percentile(r.latencies, 0.50), percentile(r.latencies, 0.99)
	perSecond := float64(time.Second) / float64(binWidth)
	for i := range max(len(r.ok), len(r.limited)) {
		b := bin{T: float64(i+1) * binWidth.Seconds()}
		if i < len(r.ok) {
			b.OK, b.Errors = float64(r.ok[i])*perSecond, float64(r.errs[i])*perSecond
		}
		if i < len(r.limited) {
			b.Upstream429 = float64(r.limited[i]) * perSecond
		}
		res.Timeline = append(res.Timeline, b)
	}
	return res
}

// percentile returns the q-quantile of sorted durations, nearest rank.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
