package redisstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeupstream"
	"github.com/redis/go-redis/v9"
)

// sharingPrefix is the store's prefix in these tests.
const sharingPrefix = "sharing:"

const (
	limitedSecret = "sk-limited-0123456789abcdef0001"
	brokeSecret   = "sk-broke-0123456789abcdef0002"
	revokedSecret = "sk-revoked-0123456789abcdef0003"
	goodSecret    = "sk-good-0123456789abcdef0004"
)

// sharingPool is a pool on a store of its own, on the Redis at addr.
func sharingPool(t *testing.T, addr string, secrets ...string) *keypool.Pool {
	t.Helper()
	rdb := redisClient(addr)
	store := New(rdb, WithPrefix(sharingPrefix))
	t.Cleanup(func() { store.Close(); rdb.Close() })
	keys := make([]keypool.Key, len(secrets))
	for i, s := range secrets {
		keys[i] = keypool.Key{Secret: s}
	}
	p, err := keypool.New(keys, keypool.WithStore(store))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// send makes one chat request through p to sim, which must succeed.
func send(t *testing.T, p *keypool.Pool, sim *fakeupstream.Server) {
	t.Helper()
	client := &http.Client{Transport: keypool.NewTransport(p, keypool.WithBase(sim.Client().Transport))}
	resp, err := client.Post(sim.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"deepseek-chat","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// One replica's 429, 401 and 402 hold for the others at once: replica B,
// which lists the keys in another order, never sends with a key that
// replica A found rate limited, revoked or out of balance. And no
// secret, nor any part of one, reaches Redis.
func TestOneReplicasAnswerHoldsForAll(t *testing.T) {
	r := startRedis(t)
	sim := fakeupstream.NewInMemory(fakeupstream.Config{Keys: map[string]fakeupstream.Key{
		limitedSecret: {Fault: fakeupstream.FaultRateLimited}, // 429, Retry-After: 1
		brokeSecret:   {Fault: fakeupstream.FaultNoBalance},   // 402
		revokedSecret: {Fault: fakeupstream.FaultRevoked},     // 401
		goodSecret:    {},
	}})
	defer sim.Close()
	a := sharingPool(t, r.Addr, limitedSecret, brokeSecret, revokedSecret, goodSecret)
	b := sharingPool(t, r.Addr, goodSecret, revokedSecret, brokeSecret, limitedSecret)

	faulty := []string{limitedSecret, brokeSecret, revokedSecret}
	for n := 0; ; n++ {
		if n > 50 {
			t.Fatal("50 requests through replica A and not every faulty key was tried")
		}
		tried := 0
		for _, s := range faulty {
			if sim.Counters(s).Requests > 0 {
				tried++
			}
		}
		if tried == len(faulty) {
			break
		}
		send(t, a, sim)
	}
	before := map[string]int{}
	for _, s := range faulty {
		before[s] = sim.Counters(s).Requests
	}
	// Within the 429's second of cooldown, B sends with the good key only.
	// (Not sharing, B sends one request with each faulty key in these 8.)
	for range 8 {
		send(t, b, sim)
	}
	for _, s := range faulty {
		if got := sim.Counters(s).Requests; got != before[s] {
			t.Errorf("%s…: %d requests after replica A's answer, want none", s[:9], got-before[s])
		}
	}
	t.Run("no secret in Redis", func(t *testing.T) {
		dump := dumpRedis(t, r.client(t))
		for _, s := range []string{limitedSecret, brokeSecret, revokedSecret, goodSecret} {
			// Any 8 bytes of a secret, past its common "sk-" prefix.
			for i := 3; i+8 <= len(s); i++ {
				if strings.Contains(dump, s[i:i+8]) {
					t.Fatalf("Redis holds %q, part of a secret", s[i:i+8])
				}
			}
		}
		if !strings.Contains(dump, "sharing:") {
			t.Fatal("the dump holds none of the store's keys: it did not read Redis")
		}
	})
}

// dumpRedis returns every key in Redis and every value, as text.
func dumpRedis(t *testing.T, rdb *redis.Client) string {
	t.Helper()
	ctx := context.Background()
	var b strings.Builder
	iter := rdb.Scan(ctx, 0, "*", 100).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		b.WriteString(key + "\n")
		var v any
		var err error
		switch typ, _ := rdb.Type(ctx, key).Result(); typ {
		case "string":
			v, err = rdb.Get(ctx, key).Result()
		case "hash":
			v, err = rdb.HGetAll(ctx, key).Result()
		case "zset":
			v, err = rdb.ZRangeWithScores(ctx, key, 0, -1).Result()
		case "set":
			v, err = rdb.SMembers(ctx, key).Result()
		case "list":
			v, err = rdb.LRange(ctx, key, 0, -1).Result()
		default:
			t.Fatalf("%s is a %s, which the dump does not read", key, typ)
		}
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(strings.TrimSpace(strings.ReplaceAll(fmt.Sprint(v), "\n", " ")) + "\n")
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	channels, err := rdb.PubSubChannels(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	b.WriteString(strings.Join(channels, "\n"))
	return b.String()
}

// A store that cannot be reached when the pool starts (without WithPing)
// makes it start on its own limits and say so; its requests succeed.
func TestStartWithoutRedis(t *testing.T) {
	sim := fakeupstream.NewInMemory(fakeupstream.Config{Keys: map[string]fakeupstream.Key{goodSecret: {}}})
	defer sim.Close()
	p := sharingPool(t, freeAddr(t), goodSecret)
	for range 3 {
		send(t, p, sim)
	}
	if err := p.StoreErr(); !errors.Is(err, keypool.ErrStoreUnavailable) {
		t.Errorf("StoreErr() = %v, want ErrStoreUnavailable", err)
	}
	if st := p.Stats()[0]; st.Shared {
		t.Error("Stats says the key is shared while Redis cannot be reached")
	}
}

// A stream that outlives the lease time keeps its slot: its replica
// renews the lease while the caller reads. Another replica's request for
// the account's one slot waits until the stream ends; the provider never
// has two in flight.
func TestStreamOutlivingItsLeaseKeepsTheSlot(t *testing.T) {
	r := startRedis(t)
	const lease = time.Second
	var inFlight, most atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for range 30 { // 3 s: three lease times
			io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n")
			w.(http.Flusher).Flush()
			time.Sleep(lease / 10)
		}
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	defer srv.Close()
	pool := func() *keypool.Pool {
		rdb := redisClient(r.Addr)
		store := New(rdb, WithPrefix("stream:"), WithLeaseTime(lease))
		t.Cleanup(func() { store.Close(); rdb.Close() })
		p, err := keypool.New([]keypool.Key{{Secret: goodSecret, MaxConcurrent: 1}}, keypool.WithStore(store))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b := pool(), pool()
	stream := func(p *keypool.Pool) error {
		client := &http.Client{Transport: keypool.NewTransport(p, keypool.WithBase(srv.Client().Transport))}
		resp, err := client.Post(srv.URL+"/v1/chat/completions", "application/json",
			strings.NewReader(`{"model":"deepseek-chat","stream":true,"messages":[]}`))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	done := make(chan error, 1)
	go func() { done <- stream(a) }()
	for inFlight.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := stream(b); err != nil { // waits for a's stream, then streams
		t.Fatalf("replica B: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("replica A: %v", err)
	}
	if m := most.Load(); m != 1 {
		t.Errorf("the provider had %d streams in flight at once on an account of 1: the lease lapsed under a stream", m)
	}
}

// A Redis that is slow rather than down (paused for 2 s, far over the
// store's 100 ms command timeout) fails no request: the pool keeps to its
// own limits and says so, and rejoins once Redis answers again.
func TestSlowRedisFailsNoRequest(t *testing.T) {
	r := startRedis(t)
	if !r.Real() {
		t.Skip("CLIENT PAUSE needs a real redis-server (KEYPOOL_REQUIRE_REDIS=1 makes a missing one a failure)")
	}
	sim := fakeupstream.NewInMemory(fakeupstream.Config{Keys: map[string]fakeupstream.Key{goodSecret: {}}})
	defer sim.Close()
	p := sharingPool(t, r.Addr, goodSecret)
	send(t, p, sim)
	if err := p.StoreErr(); err != nil {
		t.Fatalf("before the pause: %v", err)
	}
	admin := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer admin.Close()
	if err := admin.Do(context.Background(), "CLIENT", "PAUSE", "2000", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	for range 5 {
		send(t, p, sim)
	}
	if err := p.StoreErr(); !errors.Is(err, keypool.ErrStoreUnavailable) {
		t.Errorf("while Redis is paused: StoreErr() = %v, want ErrStoreUnavailable", err)
	}
	if time.Since(paused) > 2*time.Second {
		t.Log("the requests outlasted the pause; the check above may have raced it")
	}
	// Back: a request after Redis answers again rejoins.
	for deadline := time.Now().Add(30 * time.Second); p.StoreErr() != nil; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("30 s after the pause, StoreErr() = %v", p.StoreErr())
		}
		send(t, p, sim)
	}
	if !p.Stats()[0].Shared {
		t.Error("rejoined, but Stats says the key is not shared")
	}
}
