package main

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The stub upstream answers at once, so that the benchmark measures the
// hops and nothing else.
const stubAnswer = `{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"deepseek-chat",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the stub."},"finish_reason":"stop"}],` +
	`"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}}`

func startStub(b *testing.B) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, stubAnswer)
	}))
	b.Cleanup(s.Close)
	return s
}

// benchTarget is one way to reach the stub.
type benchTarget struct {
	name   string
	url    string
	token  string
	client *http.Client

	mu      sync.Mutex
	elapsed time.Duration
	n       int
	lat     []time.Duration
}

func newClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns}}
}

// run sends n requests from conc callers and records their latencies.
func (tg *benchTarget) run(b *testing.B, n, conc int) {
	body := []byte(chatBody)
	var next atomic.Int64
	lats := make([][]time.Duration, conc)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				req, _ := http.NewRequest("POST", tg.url+"/v1/chat/completions", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+tg.token)
				t0 := time.Now()
				resp, err := tg.client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lats[w] = append(lats[w], time.Since(t0))
				if resp.StatusCode != 200 {
					b.Errorf("%s: status %d", tg.name, resp.StatusCode)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	tg.mu.Lock()
	defer tg.mu.Unlock()
	tg.elapsed += elapsed
	tg.n += n
	for _, l := range lats {
		tg.lat = append(tg.lat, l...)
	}
}

func (tg *benchTarget) percentile(p float64) time.Duration {
	slices.Sort(tg.lat)
	return tg.lat[min(len(tg.lat)-1, int(p*float64(len(tg.lat))))]
}

func (tg *benchTarget) rate() float64 { return float64(tg.n) / tg.elapsed.Seconds() }

// BenchmarkSidecar measures, in one run against the same stub upstream on
// loopback: direct requests; requests through a bare httputil.ReverseProxy
// with no keypool, as is and with the keypool proxy's copy-buffer pool;
// and requests through the keypool proxy (4 keys, a client token
// checked, access logs formatted and discarded, the Prometheus collector
// and the pool's logger observing every request). The four take turns in
// slices of each run, so that a noisy neighbour slows them alike. It
// reports each one's throughput and p50/p99 latency, and the latency
// each proxy adds to direct requests.
//
//	go test -run '^$' -bench Sidecar -benchtime 20000x ./cmd/keypool/
func BenchmarkSidecar(b *testing.B) {
	for _, conc := range []int{1, 4 * runtime.GOMAXPROCS(0)} {
		b.Run(fmt.Sprintf("callers=%d", conc), func(b *testing.B) { benchSidecar(b, conc) })
	}
}

func benchSidecar(b *testing.B, conc int) {
	stub := startStub(b)
	stubURL, _ := url.Parse(stub.URL)
	// The pooled one has the copy-buffer pool the keypool proxy uses: the
	// like-for-like hop, since the default 32 KiB buffer per response is
	// a large part of a bare proxy's cost.
	bare, pooled := startBareProxy(b, stubURL, nil), startBareProxy(b, stubURL, copyBuffers)
	kp := startBenchSidecar(b, stub.URL, 4)
	targets := []*benchTarget{
		{name: "direct", url: stub.URL, token: "unused", client: newClient(conc)},
		{name: "reverseproxy", url: bare.URL, token: "unused", client: newClient(conc)},
		{name: "pooledproxy", url: pooled.URL, token: "unused", client: newClient(conc)},
		{name: "keypool", url: kp.URL, token: token, client: newClient(conc)},
	}
	for _, tg := range targets {
		b.Cleanup(tg.client.CloseIdleConnections)
		tg.run(b, 200, conc) // warm up connections and keys
		tg.elapsed, tg.n, tg.lat = 0, 0, nil
	}

	const slices = 10
	b.ResetTimer()
	for i := range slices {
		n := b.N / slices
		if i < b.N%slices {
			n++
		}
		if n == 0 {
			continue
		}
		for _, tg := range targets {
			tg.run(b, n, conc)
		}
	}
	b.StopTimer()
	if b.N < slices {
		return // the framework's first probe; too few requests to report
	}
	reportTargets(b, targets)
}

// startBareProxy serves an httputil.ReverseProxy to upstream with no
// keypool, with buffers from pool when it is not nil.
func startBareProxy(b *testing.B, upstream *url.URL, pool httputil.BufferPool) *httptest.Server {
	t := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 256}
	srv := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(upstream) },
		Transport:  t,
		BufferPool: pool,
	})
	b.Cleanup(srv.Close)
	b.Cleanup(t.CloseIdleConnections)
	return srv
}

// startBenchSidecar serves the keypool proxy's handler, as newServer
// builds it, with n keys in front of upstream.
func startBenchSidecar(b *testing.B, upstream string, n int) *httptest.Server {
	var keys []string
	for i := range n {
		keys = append(keys, fmt.Sprintf("sk-bench-%024d;max=256", i))
	}
	cfg, err := loadConfig(nil, envFunc(map[string]string{
		"KEYPOOL_KEYS": strings.Join(keys, ","), "KEYPOOL_UPSTREAM": upstream, "KEYPOOL_TOKENS": token,
	}), io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	list, _ := cfg.keys.load()
	s, err := newServer(cfg, list, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	kp := httptest.NewServer(s.main.Handler)
	b.Cleanup(kp.Close)
	b.Cleanup(s.base.(*http.Transport).CloseIdleConnections)
	return kp
}

// reportTargets reports each target's throughput and latency, the
// latency each proxy adds to direct requests (targets[0]), and the
// keypool proxy's (targets[3]) throughput against the others'.
func reportTargets(b *testing.B, targets []*benchTarget) {
	direct := targets[0]
	for _, tg := range targets {
		b.ReportMetric(tg.rate(), tg.name+"_req/s")
		b.ReportMetric(float64(tg.percentile(0.50).Microseconds()), tg.name+"_p50_µs")
		b.ReportMetric(float64(tg.percentile(0.99).Microseconds()), tg.name+"_p99_µs")
		if tg != direct {
			b.ReportMetric(float64((tg.percentile(0.50) - direct.percentile(0.50)).Microseconds()), tg.name+"_added_p50_µs")
			b.ReportMetric(float64((tg.percentile(0.99) - direct.percentile(0.99)).Microseconds()), tg.name+"_added_p99_µs")
		}
	}
	keyed := targets[3]
	b.ReportMetric(keyed.rate()/targets[1].rate(), "keypool/reverseproxy")
	b.ReportMetric(keyed.rate()/targets[2].rate(), "keypool/pooledproxy")
	b.ReportMetric(keyed.rate()/direct.rate(), "keypool/direct")
	b.ReportMetric(0, "ns/op") // one op is a request on each of four paths: not a useful figure
}

// stubTransport answers every request at once from memory.
type stubTransport struct{}

func (stubTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	return &http.Response{
		StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1, Request: req,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(strings.NewReader(stubAnswer)),
		ContentLength: int64(len(stubAnswer)),
	}, nil
}

// BenchmarkHandler is the cost of one request through each proxy's
// handler, with the upstream a stub in memory and no network: what the
// keypool proxy adds to a bare ReverseProxy (with the same buffer pool),
// without the loopback hop. The keypool proxy's figure includes the token
// check, the access log (formatted, discarded), the body and deadline
// guards, and keypool's Transport. The two take turns in blocks of 100
// requests, so that a noisy neighbour slows them alike; b.N counts pairs.
//
//	go test -run '^$' -bench Handler ./cmd/keypool/
func BenchmarkHandler(b *testing.B) {
	stubURL, _ := url.Parse("http://stub.invalid")
	bare := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(stubURL) },
		Transport:  stubTransport{},
		BufferPool: copyBuffers,
	}
	cfg, err := loadConfig(nil, envFunc(map[string]string{
		"KEYPOOL_KEYS": "sk-bench-000000000000000000000001;max=100000", "KEYPOOL_UPSTREAM": stubURL.String(), "KEYPOOL_TOKENS": token,
	}), io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	cfg.upstreamTransport = stubTransport{}
	list, _ := cfg.keys.load()
	s, err := newServer(cfg, list, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	handlers := []http.Handler{bare, s.main.Handler}
	var spent [2]time.Duration
	serve := func(h http.Handler, n int) time.Duration {
		start := time.Now()
		for range n {
			req := httptest.NewRequest("POST", "http://127.0.0.1:8787/v1/chat/completions", strings.NewReader(chatBody))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+token)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != 200 {
				b.Fatalf("status %d: %s", w.Code, w.Body)
			}
		}
		return time.Since(start)
	}
	b.ReportAllocs()
	for done := 0; done < b.N; done += 100 {
		n := min(100, b.N-done)
		for i, h := range handlers {
			spent[i] += serve(h, n)
		}
	}
	perReq := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N) }
	b.ReportMetric(perReq(spent[0]), "reverseproxy_ns/req")
	b.ReportMetric(perReq(spent[1]), "keypool_ns/req")
	b.ReportMetric(perReq(spent[1]-spent[0]), "added_ns/req")
	b.ReportMetric(0, "ns/op")
}
