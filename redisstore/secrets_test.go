package redisstore

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/redis/go-redis/v9"
)

// No secret reaches Redis, by any way: pools of keys with and without
// Name and Account, two replicas of each, send traffic that meets 429s
// with Retry-After, a 401 and a 402; then every key in Redis, every
// value of every type, the channels, every command Redis was sent
// (MONITOR) and every message published are read, and no secret, nor any
// 8 characters of one, is in them.
func TestSecretsNeverReachRedis(t *testing.T) {
	r := startRedis(t)
	if !r.Real() {
		t.Skip("miniredis has no MONITOR; the real server is needed")
	}
	// Letters that are not hex, so that no digest can hold 8 of them.
	type behaviour int
	const (
		fine behaviour = iota
		limited
		revoked
		broke
	)
	secrets := map[string]behaviour{
		"sk-Zr7Qp2Lw9Xv4NbOk": fine, "sk-Hq3Mz8Tv1Pw6RxLm": limited, "sk-Jt5Ny2Qk7Wr4ZsRv": revoked, "sk-Vx9Lp4Ht2Mq8JwBr": broke,
		"sk-Pn6Rw3Zt8Kq1XmOk": fine, "sk-Wm2Hx7Jq4Nt9VzLm": limited, "sk-Qr8Tz1Mw6Hp3KxRv": revoked, "sk-Kz4Vq9Rx2Lt7NpBr": broke,
	}
	u := startUpstream(t, func(secret string, n int, w http.ResponseWriter, _ *http.Request) {
		switch secrets[secret] {
		case limited:
			if n < 3 {
				refuse(w, http.StatusTooManyRequests, "1", "rate_limit_exceeded", "Rate limit reached")
			}
		case revoked:
			refuse(w, http.StatusUnauthorized, "", "invalid_api_key", "Incorrect API key provided")
		case broke:
			refuse(w, http.StatusPaymentRequired, "", "invalid_request_error", "Insufficient Balance")
		}
	})
	monitor := capture(t, r.Addr, "MONITOR")
	published := capture(t, r.Addr, "PSUBSCRIBE", "*")

	unnamed := []keypool.Key{
		{Secret: "sk-Zr7Qp2Lw9Xv4NbOk", MaxConcurrent: 2, RPM: 6000, TPM: 1 << 20},
		{Secret: "sk-Hq3Mz8Tv1Pw6RxLm", MaxConcurrent: 2},
		{Secret: "sk-Jt5Ny2Qk7Wr4ZsRv"},
		{Secret: "sk-Vx9Lp4Ht2Mq8JwBr"},
	}
	named := []keypool.Key{
		{Secret: "sk-Pn6Rw3Zt8Kq1XmOk", Name: "fine", Account: "acme", MaxConcurrent: 2, RPM: 6000, TPM: 1 << 20},
		{Secret: "sk-Wm2Hx7Jq4Nt9VzLm", Name: "limited", Account: "acme"},
		{Secret: "sk-Qr8Tz1Mw6Hp3KxRv", Name: "revoked", Account: "initech"},
		{Secret: "sk-Kz4Vq9Rx2Lt7NpBr", Name: "broke"},
	}
	var wg sync.WaitGroup
	for _, keys := range [][]keypool.Key{unnamed, named} {
		for range 2 { // replicas
			store := New(r.client(t), WithPrefix("leak:"), WithLeaseTime(time.Second))
			t.Cleanup(func() { store.Close() })
			_, client := newPool(t, store, keys, keypool.WithMaxWait(5*time.Second))
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 15 {
						ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						send(ctx, client, u) // whatever the answer
						cancel()
					}
				}()
			}
		}
	}
	// Everything Redis holds, read while the requests run and after.
	rdb := r.client(t)
	ctx := context.Background()
	var held strings.Builder
	kinds := map[string]int{}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		dumpRedis(t, rdb, &held, kinds)
		time.Sleep(10 * time.Millisecond)
	}
	for s, b := range secrets {
		if u.count(s) == 0 {
			t.Errorf("key %d got no request: the test did not meet its answer", b)
		}
	}
	fmt.Fprintln(&held, "channels:", rdb.PubSubChannels(ctx, "*").Val())
	fmt.Fprintln(&held, "clients:", rdb.ClientList(ctx).Val())
	t.Logf("Redis held %v keys by type, read over and over", kinds)
	if kinds["hash"] == 0 || kinds["zset"] == 0 || !strings.Contains(held.String(), "cool") || !strings.Contains(held.String(), "off") ||
		!strings.Contains(held.String(), "key:") || !strings.Contains(held.String(), "leak:released") {
		t.Errorf("Redis holds no cooldown, disablement or key block, or no channel: the test checked too little:\n%s", held.String())
	}
	sent, messages := monitor(), published()
	if !strings.Contains(sent, "evalsha") && !strings.Contains(sent, "EVALSHA") {
		t.Errorf("MONITOR saw no script run: %.500q", sent)
	}
	if !strings.Contains(messages, "pmessage") {
		t.Errorf("no message was published: %.500q", messages)
	}
	t.Logf("MONITOR saw %d bytes, the subscriber %d", len(sent), len(messages))

	for what, text := range map[string]string{"what Redis holds": held.String(), "the commands sent": sent, "the messages published": messages} {
		for s := range secrets {
			for i := 0; i+8 <= len(s); i++ {
				if part := s[i : i+8]; strings.Contains(text, part) {
					at := strings.Index(text, part)
					t.Errorf("%q of secret %s is in %s: …%s…", part, s[:5], what, text[max(at-80, 0):min(at+80, len(text))])
					break
				}
			}
		}
	}
}

// dumpRedis writes every key in Redis and its value to w, and counts
// the keys by type in kinds.
func dumpRedis(t *testing.T, rdb *redis.Client, w *strings.Builder, kinds map[string]int) {
	t.Helper()
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, "*", 100).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		kind, err := rdb.Type(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		kinds[kind]++
		fmt.Fprintf(w, "%s %s: ", kind, key)
		switch kind {
		case "none": // gone since the scan
			fmt.Fprintln(w)
		case "string":
			fmt.Fprintln(w, rdb.Get(ctx, key).Val())
		case "hash":
			fmt.Fprintln(w, rdb.HGetAll(ctx, key).Val())
		case "zset":
			fmt.Fprintln(w, rdb.ZRangeWithScores(ctx, key, 0, -1).Val())
		case "set":
			fmt.Fprintln(w, rdb.SMembers(ctx, key).Val())
		case "list":
			fmt.Fprintln(w, rdb.LRange(ctx, key, 0, -1).Val())
		default:
			t.Errorf("%s is a %s, which the test cannot read", key, kind)
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
}

// capture sends a command that makes Redis push to a connection of its
// own (MONITOR, PSUBSCRIBE) and returns a func that stops it and returns
// everything Redis pushed.
func capture(t *testing.T, addr string, args ...string) func() string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := redisWrite(c, args...); err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	done := make(chan struct{})
	ready := make(chan struct{})
	go func() {
		defer close(done)
		br := bufio.NewReader(c)
		first := true
		for {
			line, err := br.ReadString('\n')
			got.WriteString(line)
			if first {
				first = false
				close(ready)
			}
			if err != nil {
				return
			}
		}
	}()
	<-ready // Redis answered the command: it pushes from now on
	stopped := false
	stop := func() string {
		if !stopped {
			stopped = true
			c.Close()
			<-done
		}
		return got.String()
	}
	t.Cleanup(func() { stop() })
	return stop
}

// redisWrite writes a command in RESP.
func redisWrite(c net.Conn, args ...string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	_, err := c.Write([]byte(b.String()))
	return err
}
