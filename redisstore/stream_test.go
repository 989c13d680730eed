package redisstore

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool"
)

// A stream that outlives the store's lease time keeps its slot: pool a
// streams on an account of one slot while the upstream holds the stream
// open for three lease times of the shortest allowed, and pool b, sharing
// the store, keeps asking. Its requests go to a spare key below the
// account's, never to the account's, which never has two in flight; once
// the stream ends the slot is free and b's requests get it.
func TestStreamKeepsItsSlotPastTheLeaseTime(t *testing.T) {
	r := startRedis(t)
	const account, spare = "sk-stream-account-Hv6Kq3Zx", "sk-stream-spare-Jt9Bw2Mc"
	const lease = time.Second // the least WithLeaseTime allows
	hold := make(chan struct{})
	u := startUpstream(t, func(secret string, _ int, w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("X-Test"), "stream") {
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"h\"}}]}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: [DONE]\n\n")
	})
	newStorePool := func() (*keypool.Pool, *http.Client) {
		store := New(r.client(t), WithPrefix("stream:"), WithLeaseTime(lease))
		t.Cleanup(func() { store.Close() })
		return newPool(t, store, []keypool.Key{
			{Secret: account, Name: "acme", Account: "acme", MaxConcurrent: 1, Priority: 1},
			{Secret: spare, Name: "spare"},
		}, keypool.WithMaxWait(5*time.Second), keypool.WithSpillAfter(20*time.Millisecond))
	}
	_, clientA := newStorePool()
	b, clientB := newStorePool()

	req, _ := http.NewRequest(http.MethodPost, u.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"deepseek-chat","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("X-Test", "stream")
	began := time.Now()
	resp, err := clientA.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(first, "data: ") {
		t.Fatalf("the stream's first line: %q, %v", first, err)
	}
	if got := u.count(account); got != 1 {
		t.Fatalf("the stream went elsewhere: the account's key got %d requests", got)
	}

	// Three lease times, b asking all along, and a third replica asking
	// the store itself without pause, as b does only every so often: a
	// lease renewed late is lost in a moment.
	probe := New(r.client(t), WithPrefix("stream:"), WithLeaseTime(lease))
	stop := make(chan struct{})
	probed := make(chan []string)
	var taken int
	go func() {
		var got []string
		for i := 0; ; i++ {
			select {
			case <-stop:
				probed <- got
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			lease := fmt.Sprintf("prober-%d", i)
			took, err := probe.Take(ctx, keypool.StoreTake{Account: "a:acme", Key: "k", Lease: lease, Limit: 1})
			if err == nil && took.OK {
				if len(got) < 5 {
					got = append(got, fmt.Sprintf("%v after the stream began", time.Since(began).Round(time.Millisecond)))
				}
				taken++
				probe.Release(ctx, "a:acme", lease, 0)
			}
			cancel()
		}
	}()
	sent := 0
	for start := time.Now(); time.Since(start) < 3*lease+lease/2; sent++ {
		mustSend(t, clientB, u)
	}
	t.Logf("b sent %d requests while the stream was open", sent)
	close(stop)
	if got := <-probed; len(got) > 0 {
		t.Errorf("another replica got the streaming account's only slot %d times, first %v", taken, got)
	}
	if got := u.count(account); got != 1 {
		t.Errorf("b got the streaming account's slot: its key got %d requests while the stream held its only slot", got-1)
	}
	if got := u.maxInFlight(account); got > 1 {
		t.Errorf("the account had %d requests in flight, over its 1", got)
	}
	if got := u.count(spare); got != sent {
		t.Errorf("the spare key got %d of b's %d requests", got, sent)
	}

	close(hold)
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatalf("the stream's end: %v", err)
	}
	resp.Body.Close()
	waitFor(t, "b's request on the account after the stream ended", func() bool {
		mustSend(t, clientB, u)
		return u.count(account) > 1
	})
	if st := statsOf(t, b, "acme"); !st.Shared {
		t.Errorf("b's stats: not shared: %+v", st)
	}
}
