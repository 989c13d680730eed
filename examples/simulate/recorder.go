package main

import (
	"slices"
	"sync"
	"time"
)

// binWidth is the resolution of the timeline.
const binWidth = 250 * time.Millisecond

// result is what one scenario measured.
type result struct {
	Name      string `json:"name"`
	Requests  int    `json:"requests"`
	Succeeded int    `json:"succeeded"`
	// Failed counts requests that got an error or a non-200 answer, or
	// were not answered before their deadline.
	Failed int `json:"failed"`
	// ServedByB counts the successes provider B served: only the fallback
	// scenario sends there.
	ServedByB   int `json:"served_by_b"`
	Upstream429 int `json:"upstream_429"` // sent by the upstream, A and B together
	Upstream5xx int `json:"upstream_5xx"`
	UpstreamReq int `json:"upstream_requests"`
	// P50 and P99 are of successful requests, from arrival to the end of
	// the answer, so time spent waiting for a key counts.
	P50      time.Duration `json:"p50_ns"`
	P99      time.Duration `json:"p99_ns"`
	Shares   []keyShare    `json:"key_shares"`
	Timeline []bin         `json:"timeline"`
}

// succeededShare is the headline: the share of requests that succeeded.
func (r *result) succeededShare() float64 {
	if r.Requests == 0 {
		return 0
	}
	return float64(r.Succeeded) / float64(r.Requests)
}

// keyShare is a key's part of the successful requests.
type keyShare struct {
	Key   string  `json:"key"`
	Share float64 `json:"share"`
}

// bin is the outcomes callers saw in one slice of time, as rates per
// second, counted when each request finished.
type bin struct {
	T  float64 `json:"t"` // seconds since the start, at the bin's end
	OK float64 `json:"ok_per_s"`
	// OKB is the part of OK that provider B served.
	OKB    float64 `json:"ok_b_per_s,omitempty"`
	Failed float64 `json:"failed_per_s"`
}

// recorder gathers outcomes as requests finish.
type recorder struct {
	mu             sync.Mutex
	latencies      []time.Duration // of successes
	ok, okB, fails []int           // per bin
}

func newRecorder() *recorder { return &recorder{} }

// add records a request that arrived and finished at these offsets from
// the start of the run; byB says provider B served it.
func (r *recorder) add(arrived, finished time.Duration, ok, byB bool) {
	i := int(finished / binWidth)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.grow(i + 1)
	if !ok {
		r.fails[i]++
		return
	}
	r.ok[i]++
	r.latencies = append(r.latencies, finished-arrived)
	if byB {
		r.okB[i]++
	}
}

func (r *recorder) grow(bins int) {
	for len(r.ok) < bins {
		r.ok, r.okB, r.fails = append(r.ok, 0), append(r.okB, 0), append(r.fails, 0)
	}
}

// result sums up the run; its timeline covers at least window.
func (r *recorder) result(name string, window time.Duration) *result {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.grow(int((window + binWidth - 1) / binWidth))
	res := &result{Name: name}
	perSecond := float64(time.Second) / float64(binWidth)
	for i := range r.ok {
		res.Succeeded += r.ok[i]
		res.ServedByB += r.okB[i]
		res.Failed += r.fails[i]
		res.Timeline = append(res.Timeline, bin{
			T:      float64(i+1) * binWidth.Seconds(),
			OK:     float64(r.ok[i]) * perSecond,
			OKB:    float64(r.okB[i]) * perSecond,
			Failed: float64(r.fails[i]) * perSecond,
		})
	}
	res.Requests = res.Succeeded + res.Failed
	slices.Sort(r.latencies)
	res.P50, res.P99 = percentile(r.latencies, 0.50), percentile(r.latencies, 0.99)
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
