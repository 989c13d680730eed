package redisstore

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/redis/go-redis/v9"
)

// stubBase answers every request at once, so that the benchmark measures
// keypool and the store and nothing else.
type stubBase struct{}

func (stubBase) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(`{"ok":true}`)), Request: req}, nil
}

// commandCounter counts the commands a client sends.
type commandCounter struct{ n atomic.Int64 }

func (c *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}
func (c *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// BenchmarkStoreOverhead is the cost a store adds to a request, against
// a loopback Redis: round trips per request, and the latency of a
// request with and without the store (reported as p50 and p99 in µs).
func BenchmarkStoreOverhead(b *testing.B) {
	r := startRedis(&testing.T{})
	defer r.Stop()
	for _, withStore := range []bool{false, true} {
		b.Run(fmt.Sprintf("store=%v", withStore), func(b *testing.B) {
			var opts []keypool.Option
			counter := &commandCounter{}
			if withStore {
				rdb := redis.NewClient(ClientOptions(r.Addr))
				defer rdb.Close()
				rdb.AddHook(counter)
				store := New(rdb, WithPrefix(fmt.Sprintf("bench-%d:", time.Now().UnixNano())))
				defer store.Close()
				opts = append(opts, keypool.WithStore(store))
			}
			keys := make([]keypool.Key, 10)
			for i := range keys {
				keys[i] = keypool.Key{Secret: fmt.Sprintf("sk-bench-%02d-0123456789abcdef", i), MaxConcurrent: 1000}
			}
			pool, err := keypool.New(keys, opts...)
			if err != nil {
				b.Fatal(err)
			}
			tr := keypool.NewTransport(pool, keypool.WithBase(stubBase{}))
			latencies := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				req, _ := http.NewRequest(http.MethodPost, "https://api.example/v1/chat/completions", strings.NewReader(chatBody))
				resp, err := tr.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				latencies = append(latencies, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(latencies)
			b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(counter.n.Load())/float64(b.N), "roundtrips/op")
		})
	}
}

// BenchmarkReplicas is the 4-replica scenario: 5 keys capped at 4 in
// flight, 20 ms answers, 10 callers per replica, each replica its own
// pool (and its own Redis client), without and with the store. It
// reports the keys' capacity the replicas got together, the upstream's
// 429s, and the replicas' goodput min/max.
func BenchmarkReplicas(b *testing.B) {
	t := &testing.T{}
	r := startRedis(t)
	defer r.Stop()
	for _, withStore := range []bool{false, true} {
		b.Run(fmt.Sprintf("store=%v", withStore), func(b *testing.B) {
			for range b.N {
				const cap, replicas = 4, 4
				sim, secrets := deepseek(t, cap)
				job := replica{SimURL: sim.URL, Prefix: fmt.Sprintf("replicas-%d:", time.Now().UnixNano()), Secrets: secrets,
					Cap: cap, Callers: 10, Requests: 1 << 30, LeaseTime: 5 * time.Second,
					From: time.Now().Add(200 * time.Millisecond), For: 3 * time.Second}
				if withStore {
					job.RedisAddr = r.Addr
				}
				outcomes := make([]outcome, replicas)
				var wg sync.WaitGroup
				for i := range replicas {
					wg.Add(1)
					go func() { defer wg.Done(); outcomes[i] = job.run() }()
				}
				wg.Wait()
				total := sim.Total()
				ok, lo, hi := 0, outcomes[0].goodput(), outcomes[0].goodput()
				for _, o := range outcomes {
					ok += o.OK
					lo, hi = min(lo, o.goodput()), max(hi, o.goodput())
				}
				capacity := float64(len(secrets)*cap) / (22500 * time.Microsecond).Seconds() // 20 ms + a mean 2.5 ms of jitter
				b.ReportMetric(100*float64(ok)/job.For.Seconds()/capacity, "%capacity")
				b.ReportMetric(100*float64(total.RateLimited)/float64(total.Requests), "%429")
				b.ReportMetric(lo/hi, "fairness")
				sim.Close()
			}
		})
	}
}
