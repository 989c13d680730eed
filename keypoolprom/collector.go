// Package keypoolprom exports a keypool.Pool's metrics to Prometheus.
//
//	pool, _ := keypool.New(keys)
//	prometheus.MustRegister(keypoolprom.NewCollector(pool))
//
// Every metric about a key has a "key" label: the key's Name, which is
// its masked secret ("sk-…abcd") unless Key.Name says otherwise. No
// secret is ever exported.
//
// Counters and histograms are fed by the pool's events (see
// keypool.Observer) from the moment the collector is made; gauges, and
// the token counter, are read from Pool.Stats when Prometheus scrapes:
//
//	keypool_upstream_requests_total{key,outcome}   requests sent upstream, by what came of them:
//	                                               ok, rejected (400, 404, 422), rate_limited (429),
//	                                               refused (401, 402, 403, quota), failure (5xx,
//	                                               connection errors), model_not_found, canceled
//	                                               (the caller's context or body)
//	keypool_requests_total{code}                   requests as the callers got them: the status
//	                                               code, or "error"
//	keypool_request_attempts                       histogram of attempts per request
//	keypool_wait_seconds{key}                      histogram of the time waited for the key
//	keypool_upstream_latency_seconds{key}          histogram of the time to the upstream's answer
//	                                               (its headers; a stream's body comes later)
//	keypool_retries_refused_total{key}             retries the retry budget refused
//	keypool_key_tokens_total{key}                  tokens the upstream reported using (KeyStats.Tokens:
//	                                               usage of JSON answers and of streams' final chunks)
//	keypool_key_in_flight{key}                     requests holding the key now
//	keypool_key_limit{key}                         the account's in-flight limit (0: none)
//	keypool_key_state{key,state}                   1 for the key's state, 0 for the others
//	keypool_key_priority{key}                      the key's tier (Key.Priority)
//
// The 429s keypool absorbed are the upstream's 429s the callers never
// saw: sum(keypool_upstream_requests_total{outcome="rate_limited"}) −
// sum(keypool_requests_total{code="429"}).
package keypoolprom

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keypool/keypool"
)

// Option configures a collector.
type Option func(*config)

type config struct {
	namespace   string
	constLabels prometheus.Labels
	buckets     []float64
}

// WithNamespace replaces the metrics' "keypool" prefix.
func WithNamespace(ns string) Option { return func(c *config) { c.namespace = ns } }

// WithConstLabels adds labels to every metric, as a pool's name when a
// process has several pools.
func WithConstLabels(l prometheus.Labels) Option { return func(c *config) { c.constLabels = l } }

// WithBuckets sets the buckets, in seconds, of the wait and latency
// histograms. The default runs from 5 ms to 2 minutes: LLM answers take
// seconds, and waits for a key can take as long.
func WithBuckets(b []float64) Option { return func(c *config) { c.buckets = b } }

var defaultBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

// Collector is a prometheus.Collector of one pool's metrics.
type Collector struct {
	pool *keypool.Pool

	upstream *prometheus.CounterVec
	requests *prometheus.CounterVec
	attempts prometheus.Histogram
	wait     *prometheus.HistogramVec
	latency  *prometheus.HistogramVec
	refused  *prometheus.CounterVec

	inFlight, limit, state, priority *prometheus.Desc
	tokens                           *prometheus.Desc
}

// NewCollector returns a collector of p's metrics, to register with a
// prometheus.Registerer. It observes p from now on (Pool.AddObserver);
// make one collector per pool.
func NewCollector(p *keypool.Pool, opts ...Option) *Collector {
	cfg := config{namespace: "keypool", buckets: defaultBuckets}
	for _, o := range opts {
		o(&cfg)
	}
	c := &Collector{pool: p}
	c.describe(cfg)
	p.AddObserver(keypool.Observer{Attempt: c.attempt, Request: c.request, RetryRefused: c.retryRefused})
	return c
}

func (c *Collector) describe(cfg config) {
	ns, cl := cfg.namespace, cfg.constLabels
	c.upstream = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "upstream_requests_total", ConstLabels: cl,
		Help: "Requests sent upstream with each key, by outcome: ok, rejected, rate_limited, refused, failure, model_not_found, canceled."},
		[]string{"key", "outcome"})
	c.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "requests_total", ConstLabels: cl,
		Help: "Requests as the callers got them, by status code, or error when they got no response."}, []string{"code"})
	c.attempts = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "request_attempts", ConstLabels: cl,
		Help: "Attempts per request.", Buckets: []float64{1, 2, 3, 4, 5, 8, 12, 20}})
	c.wait = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "wait_seconds", ConstLabels: cl,
		Help: "Time a request waited for the key it was sent with.", Buckets: cfg.buckets}, []string{"key"})
	c.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "upstream_latency_seconds", ConstLabels: cl,
		Help: "Time from sending a request upstream to its answer's headers, or its failure.", Buckets: cfg.buckets}, []string{"key"})
	c.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "retries_refused_total", ConstLabels: cl,
		Help: "Retries after a provider failure that the retry budget refused."}, []string{"key"})
	c.inFlight = prometheus.NewDesc(prometheus.BuildFQName(ns, "key", "in_flight"), "Requests holding the key now.", []string{"key"}, cl)
	c.limit = prometheus.NewDesc(prometheus.BuildFQName(ns, "key", "limit"),
		"In-flight limit of the key's account: MaxConcurrent or the learned limit; 0 for none.", []string{"key"}, cl)
	c.state = prometheus.NewDesc(prometheus.BuildFQName(ns, "key", "state"),
		"1 for the key's state (ready, probing, cooling, ejected, disabled), 0 for the others.", []string{"key", "state"}, cl)
	c.priority = prometheus.NewDesc(prometheus.BuildFQName(ns, "key", "priority"), "The key's tier: higher serves first.", []string{"key"}, cl)
	// Read from Stats rather than fed by events: the pool counts usage as
	// a body is read to its end, after every event of the request.
	c.tokens = prometheus.NewDesc(prometheus.BuildFQName(ns, "key", "tokens_total"),
		"Tokens the upstream reported using for the key's requests, from the usage of JSON answers and of streams' final chunks.",
		[]string{"key"}, cl)
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.vecs() {
		m.Describe(ch)
	}
	ch <- c.inFlight
	ch <- c.limit
	ch <- c.state
	ch <- c.priority
	ch <- c.tokens
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.vecs() {
		m.Collect(ch)
	}
	for _, st := range c.pool.Stats() {
		ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(st.InFlight), st.Name)
		ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, float64(st.Limit), st.Name)
		ch <- prometheus.MustNewConstMetric(c.priority, prometheus.GaugeValue, float64(st.Priority), st.Name)
		ch <- prometheus.MustNewConstMetric(c.tokens, prometheus.CounterValue, float64(st.Tokens), st.Name)
		for _, s := range states {
			v := 0.0
			if st.State == s {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, v, st.Name, s.String())
		}
	}
}

var states = []keypool.State{keypool.StateReady, keypool.StateProbing, keypool.StateCooling, keypool.StateEjected, keypool.StateDisabled}

func (c *Collector) vecs() []prometheus.Collector {
	return []prometheus.Collector{c.upstream, c.requests, c.attempts, c.wait, c.latency, c.refused}
}

func (c *Collector) attempt(e keypool.AttemptEvent) {
	c.upstream.WithLabelValues(e.Key, outcome(e)).Inc()
	c.wait.WithLabelValues(e.Key).Observe(e.Waited.Seconds())
	if !e.ByCaller {
		c.latency.WithLabelValues(e.Key).Observe(e.Took.Seconds())
	}
}

// outcome names what came of an attempt.
func outcome(e keypool.AttemptEvent) string {
	switch {
	case e.ByCaller:
		return "canceled"
	case e.Outcome.Effect == keypool.EffectRateLimited:
		return "rate_limited"
	case e.Outcome.Effect == keypool.EffectKeyRevoked, e.Outcome.Effect == keypool.EffectAccountExhausted:
		return "refused"
	case e.Outcome.Effect == keypool.EffectFailure:
		return "failure"
	case e.Outcome.Effect == keypool.EffectModelNotFound:
		return "model_not_found"
	case e.Status >= 200 && e.Status < 400:
		return "ok"
	}
	return "rejected"
}

func (c *Collector) request(e keypool.RequestEvent) {
	code := "error"
	if e.Err == nil {
		code = strconv.Itoa(e.Status)
	}
	c.requests.WithLabelValues(code).Inc()
	c.attempts.Observe(float64(len(e.Attempts)))
}

func (c *Collector) retryRefused(e keypool.RetryRefusedEvent) {
	c.refused.WithLabelValues(e.Key).Inc()
}
