package keypool

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/fakeupstream"
)

// stubContentType is the stub's one header value, shared: the header
// map itself is made per response, as a real transport makes it, since
// keypool adds its own headers to the response it returns.
var stubContentType = []string{"application/json"}

// emptyBody is a body that reads as empty and can be reused; NoBody
// would make keypool release the lease before the caller closes.
type emptyBody struct{}

func (emptyBody) Read([]byte) (int, error) { return 0, io.EOF }
func (emptyBody) Close() error             { return nil }

// stubBodyBase answers every request at once with a 200 and an empty
// body, so that benchmarks measure keypool and nothing else.
type stubBodyBase struct{}

func (stubBodyBase) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	h := make(http.Header, 4)
	h["Content-Type"] = stubContentType
	return &http.Response{StatusCode: 200, Header: h, Body: emptyBody{}, Request: req}, nil
}

func benchKeys(n int) []Key {
	keys := make([]Key, n)
	for i := range keys {
		keys[i] = Key{Secret: fmt.Sprintf("sk-bench-%06d-0123456789abcdef", i), MaxConcurrent: 1 << 20}
	}
	return keys
}

// newGoOpenAIStyleRequest builds a request the way go-openai does: a
// bytes.Buffer body, so net/http sets GetBody.
func newGoOpenAIStyleRequest(b *testing.B) *http.Request {
	req, err := http.NewRequest(http.MethodPost, "https://api.deepseek.com/v1/chat/completions",
		bytes.NewBufferString(`{"model":"deepseek-chat","messages":[{"role":"user","content":"hello"}]}`))
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer placeholder")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	return req
}

var keyCounts = []int{1, 10, 100, 1000, 10000}

// BenchmarkBase is the stub alone: subtract it from BenchmarkTransport to
// get keypool's own cost.
func BenchmarkBase(b *testing.B) {
	req := newGoOpenAIStyleRequest(b)
	base := stubBodyBase{}
	b.ReportAllocs()
	for b.Loop() {
		resp, _ := base.RoundTrip(req)
		resp.Body.Close()
	}
}

// BenchmarkTransport is one request through keypool over the stub, the
// response body closed, at several pool sizes, serial and parallel.
func BenchmarkTransport(b *testing.B) {
	for _, n := range keyCounts {
		p, err := New(benchKeys(n))
		if err != nil {
			b.Fatal(err)
		}
		proveAll(p)
		tr := NewTransport(p, WithBase(stubBodyBase{}))
		b.Run(fmt.Sprintf("keys=%d/serial", n), func(b *testing.B) {
			req := newGoOpenAIStyleRequest(b)
			b.ReportAllocs()
			for b.Loop() {
				resp, err := tr.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
			}
		})
		b.Run(fmt.Sprintf("keys=%d/parallel", n), func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				req := newGoOpenAIStyleRequest(b)
				for pb.Next() {
					resp, err := tr.RoundTrip(req)
					if err != nil {
						b.Error(err)
						return
					}
					resp.Body.Close()
				}
			})
		})
	}
}

// BenchmarkAcquireRelease is selection and lease alone.
func BenchmarkAcquireRelease(b *testing.B) {
	for _, n := range keyCounts {
		p, err := New(benchKeys(n))
		if err != nil {
			b.Fatal(err)
		}
		proveAll(p)
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				r := &acquireRequest{}
				for pb.Next() {
					l, err := acquireFor(p, ctx, r)
					if err != nil {
						b.Error(err)
						return
					}
					l.release()
				}
			})
		})
	}
}

// BenchmarkEndToEnd sends chat completions over loopback to the simulator
// (no latency, no limits), through keypool and through a bare
// http.Transport, with the same parallel callers.
func BenchmarkEndToEnd(b *testing.B) {
	secrets := make([]string, 10)
	keys := make([]Key, len(secrets))
	simKeys := map[string]fakeupstream.Key{}
	for i := range secrets {
		secrets[i] = fmt.Sprintf("sk-e2e-%02d-0123456789abcdef", i)
		keys[i] = Key{Secret: secrets[i]}
		simKeys[secrets[i]] = fakeupstream.Key{}
	}
	sim := fakeupstream.New(fakeupstream.Config{Keys: simKeys})
	defer sim.Close()
	body := []byte(`{"model":"deepseek-chat","messages":[{"role":"user","content":"hello"}]}`)
	run := func(b *testing.B, rt http.RoundTripper) {
		b.ReportAllocs()
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req, _ := http.NewRequest(http.MethodPost, sim.URL+"/v1/chat/completions", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+secrets[0])
				resp, err := rt.RoundTrip(req)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
	}
	newBase := func() *http.Transport {
		return &http.Transport{MaxIdleConnsPerHost: 64, MaxIdleConns: 64}
	}
	b.Run("bare", func(b *testing.B) {
		base := newBase()
		defer base.CloseIdleConnections()
		run(b, base)
	})
	b.Run("keypool", func(b *testing.B) {
		base := newBase()
		defer base.CloseIdleConnections()
		p, err := New(keys)
		if err != nil {
			b.Fatal(err)
		}
		run(b, NewTransport(p, WithBase(base)))
	})
}

// BenchmarkCapacity offers more load than N keys with known in-flight caps
// can take and reports goodput as a fraction of their aggregate capacity,
// upstream 429s per request, and caller-visible errors, at two upstream
// latencies. Each iteration is a fixed 3-second run: use -benchtime 1x.
func BenchmarkCapacity(b *testing.B) {
	for _, latency := range []time.Duration{20 * time.Millisecond, 100 * time.Millisecond} {
		b.Run(fmt.Sprintf("latency=%v", latency), func(b *testing.B) {
			for b.Loop() {
				runCapacity(b, latency)
			}
		})
	}
}

func runCapacity(b *testing.B, latency time.Duration) {
	const (
		nKeys   = 5
		cap     = 4
		callers = 40
		warmUp  = time.Second // probing and ramp-up
		window  = 3 * time.Second
	)
	accounts := map[string]fakeupstream.Account{}
	simKeys := map[string]fakeupstream.Key{}
	keys := make([]Key, nKeys)
	secrets := make([]string, nKeys)
	for i := range keys {
		secrets[i] = fmt.Sprintf("sk-cap-%02d-0123456789abcdef", i)
		accounts[secrets[i]] = fakeupstream.Account{MaxInFlight: cap}
		simKeys[secrets[i]] = fakeupstream.Key{}
		keys[i] = Key{Secret: secrets[i], MaxConcurrent: cap}
	}
	sim := fakeupstream.New(fakeupstream.Config{Mode: fakeupstream.DeepSeek, Accounts: accounts, Keys: simKeys, Latency: latency})
	defer sim.Close()
	base := &http.Transport{MaxIdleConnsPerHost: 2 * callers}
	defer base.CloseIdleConnections()
	p, err := New(keys)
	if err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Transport: NewTransport(p, WithBase(base))}
	var ok, okInWindow, failed atomic.Int64
	start := time.Now()
	windowStart, windowEnd := start.Add(warmUp), start.Add(warmUp+window)
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(windowEnd) {
				resp, err := client.Post(sim.URL+"/v1/chat/completions", "application/json",
					bytes.NewReader([]byte(`{"model":"deepseek-chat"}`)))
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					continue
				}
				ok.Add(1)
				if now := time.Now(); now.After(windowStart) && now.Before(windowEnd) {
					okInWindow.Add(1)
				}
			}
		}()
	}
	// Sample the upstream's busy slots through the steady window.
	time.Sleep(time.Until(windowStart))
	busy, samples := 0, 0
	for time.Now().Before(windowEnd) {
		for _, s := range secrets {
			busy += sim.InFlight(s)
		}
		samples++
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	total := sim.Total()
	// Nominal capacity counts each request as holding its slot for exactly
	// the latency; the simulator's own handling adds a little to that, so
	// the slots' measured occupancy is the direct figure: the share of the
	// keys' capacity the pool kept in use.
	nominal := float64(nKeys*cap) / latency.Seconds()
	b.ReportMetric(float64(okInWindow.Load())/window.Seconds()/nominal, "goodput/nominal")
	b.ReportMetric(float64(busy)/float64(samples*nKeys*cap), "slot-occupancy")
	b.ReportMetric(100*float64(total.RateLimited)/float64(max(total.Requests, 1)), "upstream429%")
	b.ReportMetric(float64(failed.Load()), "caller-errors")
}

// BenchmarkWaitingCallers measures what a caller waiting for a key costs
// keypool: heap bytes per waiter (the queue entry, its channel and its
// max-wait timer) and, for scale, the waiting goroutine's stack, with
// 10,000 callers queued for a pool whose only slot is taken.
func BenchmarkWaitingCallers(b *testing.B) {
	const waiters = 10_000
	for b.Loop() {
		p, err := New([]Key{{Secret: "sk-wait-0123456789abcdef", MaxConcurrent: 1}})
		if err != nil {
			b.Fatal(err)
		}
		proveAll(p)
		hold, err := acquireFor(p, context.Background(), &acquireRequest{})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		var wg sync.WaitGroup
		for range waiters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := acquireFor(p, ctx, &acquireRequest{}); err == nil {
					b.Error("served while the slot was held")
				}
			}()
		}
		for p.nwait.Load() < waiters {
			time.Sleep(time.Millisecond)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/waiters, "heap-B/waiter")
		b.ReportMetric(float64(after.StackInuse-before.StackInuse)/waiters, "stack-B/waiter")
		cancel()
		wg.Wait()
		hold.release()
		if p.nwait.Load() != 0 {
			b.Fatal("waiters left after cancel")
		}
	}
}
