package keypoolprom

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeupstream"
)

const (
	revokedSecret = "sk-revoked-0123456789abcdef"
	goodSecret    = "sk-good-0123456789abcdefgh"
)

const chatBody = `{"model":"deepseek-chat","messages":[{"role":"user","content":"hi"}]}`

func post(t *testing.T, client *http.Client, url string) { postBody(t, client, url, chatBody) }

// postBody sends a chat completion and reads its answer to the end.
func postBody(t *testing.T, client *http.Client, url, body string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, url+"/v1/chat/completions",
		strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// The collector's metrics pass promlint and say what happened: the
// revoked key refused once and disabled, the good key serving every
// request, each request after two attempts at most.
func TestCollector(t *testing.T) {
	sim := fakeupstream.NewInMemory(fakeupstream.Config{Keys: map[string]fakeupstream.Key{
		revokedSecret: {Fault: fakeupstream.FaultRevoked}, goodSecret: {},
	}})
	defer sim.Close()
	p, err := keypool.New([]keypool.Key{{Secret: revokedSecret, Weight: 1000, Priority: 2}, {Secret: goodSecret, Name: "good", Priority: 2}})
	if err != nil {
		t.Fatal(err)
	}
	c := NewCollector(p)
	client := &http.Client{Transport: keypool.NewTransport(p, keypool.WithBase(sim.Client().Transport))}
	for range 3 {
		post(t, client, sim.URL)
	}

	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range problems {
		t.Errorf("promlint: %s: %s", pr.Metric, pr.Text)
	}

	revoked := "sk-…cdef"
	want := `
# HELP keypool_upstream_requests_total Requests sent upstream with each key, by outcome: ok, rejected, rate_limited, refused, failure, model_not_found, canceled.
# TYPE keypool_upstream_requests_total counter
keypool_upstream_requests_total{key="good",outcome="ok"} 3
keypool_upstream_requests_total{key="` + revoked + `",outcome="refused"} 1
# HELP keypool_requests_total Requests as the callers got them, by status code, or error when they got no response.
# TYPE keypool_requests_total counter
keypool_requests_total{code="200"} 3
# HELP keypool_request_attempts Attempts per request.
# TYPE keypool_request_attempts histogram
keypool_request_attempts_bucket{le="1"} 2
keypool_request_attempts_bucket{le="2"} 3
keypool_request_attempts_bucket{le="3"} 3
keypool_request_attempts_bucket{le="4"} 3
keypool_request_attempts_bucket{le="5"} 3
keypool_request_attempts_bucket{le="8"} 3
keypool_request_attempts_bucket{le="12"} 3
keypool_request_attempts_bucket{le="20"} 3
keypool_request_attempts_bucket{le="+Inf"} 3
keypool_request_attempts_sum 4
keypool_request_attempts_count 3
# HELP keypool_key_state 1 for the key's state (ready, probing, cooling, ejected, disabled), 0 for the others.
# TYPE keypool_key_state gauge
keypool_key_state{key="good",state="cooling"} 0
keypool_key_state{key="good",state="disabled"} 0
keypool_key_state{key="good",state="ejected"} 0
keypool_key_state{key="good",state="probing"} 0
keypool_key_state{key="good",state="ready"} 1
keypool_key_state{key="` + revoked + `",state="cooling"} 0
keypool_key_state{key="` + revoked + `",state="disabled"} 1
keypool_key_state{key="` + revoked + `",state="ejected"} 0
keypool_key_state{key="` + revoked + `",state="probing"} 0
keypool_key_state{key="` + revoked + `",state="ready"} 0
# HELP keypool_key_in_flight Requests holding the key now.
# TYPE keypool_key_in_flight gauge
keypool_key_in_flight{key="good"} 0
keypool_key_in_flight{key="` + revoked + `"} 0
# HELP keypool_key_priority The key's tier: higher serves first.
# TYPE keypool_key_priority gauge
keypool_key_priority{key="good"} 2
keypool_key_priority{key="` + revoked + `"} 2
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"keypool_upstream_requests_total", "keypool_requests_total", "keypool_request_attempts",
		"keypool_key_state", "keypool_key_in_flight", "keypool_key_priority"); err != nil {
		t.Error(err)
	}
	// The time histograms: one series per key that was sent a request,
	// with a sample per attempt; the learned limits are Stats'.
	if n := testutil.CollectAndCount(c, "keypool_wait_seconds", "keypool_upstream_latency_seconds"); n != 4 {
		t.Errorf("%d wait and latency series, want 4", n)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	attempts := map[string]uint64{"good": 3, revoked: 1}
	limits := map[string]float64{}
	for _, st := range p.Stats() {
		limits[st.Name] = float64(st.Limit)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "key" {
					key = l.GetValue()
				}
			}
			switch f.GetName() {
			case "keypool_wait_seconds", "keypool_upstream_latency_seconds":
				if got := m.GetHistogram().GetSampleCount(); got != attempts[key] {
					t.Errorf("%s{key=%q}: %d samples, want %d (its attempts)", f.GetName(), key, got, attempts[key])
				}
			case "keypool_key_limit":
				if got := m.GetGauge().GetValue(); got != limits[key] {
					t.Errorf("keypool_key_limit{key=%q} = %v, Stats says %v", key, got, limits[key])
				}
				delete(limits, key)
			}
		}
	}
	if len(limits) != 0 {
		t.Errorf("no keypool_key_limit for %v", limits)
	}
	// No secret is in what it exports.
	for _, f := range families {
		if s := f.String(); strings.Contains(s, revokedSecret[8:]) || strings.Contains(s, goodSecret[8:]) {
			t.Fatalf("%s exports a secret", f.GetName())
		}
	}
}

// keypool_key_tokens_total is the usage the upstream reported, of JSON
// answers and of streams' final chunks alike: what the simulator billed.
func TestCollectorTokens(t *testing.T) {
	sim := fakeupstream.NewInMemory(fakeupstream.Config{Keys: map[string]fakeupstream.Key{
		revokedSecret: {Fault: fakeupstream.FaultRevoked}, goodSecret: {},
	}, StreamChunks: 3})
	defer sim.Close()
	p, err := keypool.New([]keypool.Key{{Secret: revokedSecret, Name: "revoked", Weight: 1000}, {Secret: goodSecret, Name: "good"}})
	if err != nil {
		t.Fatal(err)
	}
	c := NewCollector(p)
	client := &http.Client{Transport: keypool.NewTransport(p, keypool.WithBase(sim.Client().Transport))}
	post(t, client, sim.URL)
	postBody(t, client, sim.URL, `{"model":"deepseek-chat","stream":true,"messages":[{"role":"user","content":"a longer question"}]}`)
	post(t, client, sim.URL)

	billed := sim.Counters(goodSecret)
	if billed.OK != 3 {
		t.Fatalf("the simulator answered %d requests, want 3", billed.OK)
	}
	want := fmt.Sprintf(`
# HELP keypool_key_tokens_total Tokens the upstream reported using for the key's requests, from the usage of JSON answers and of streams' final chunks.
# TYPE keypool_key_tokens_total counter
keypool_key_tokens_total{key="good"} %d
keypool_key_tokens_total{key="revoked"} 0
`, billed.PromptTokens+billed.CompletionTokens)
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "keypool_key_tokens_total"); err != nil {
		t.Error(err)
	}
	problems, err := testutil.CollectAndLint(c, "keypool_key_tokens_total")
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range problems {
		t.Errorf("promlint: %s: %s", pr.Metric, pr.Text)
	}
}

// Options rename the metrics and label them.
func TestCollectorOptions(t *testing.T) {
	p, err := keypool.New([]keypool.Key{{Secret: goodSecret, Name: "good"}})
	if err != nil {
		t.Fatal(err)
	}
	c := NewCollector(p, WithNamespace("llm"), WithConstLabels(prometheus.Labels{"pool": "chat"}), WithBuckets([]float64{1, 10}))
	want := `
# HELP llm_key_in_flight Requests holding the key now.
# TYPE llm_key_in_flight gauge
llm_key_in_flight{key="good",pool="chat"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "llm_key_in_flight"); err != nil {
		t.Error(err)
	}
}
