package redisstore

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool"
)

// A request that outlives the store's lease time keeps its slot: pool a
// sends on an account of one slot while the upstream holds the request
// for three lease times of the shortest allowed, and pool b, sharing the
// store, keeps asking. Its requests go to a spare key below the
// account's, never to the account's, which never has two in flight; once
// the request ends the slot is free and b's requests get it.
//
// The upstream holds either a stream open after its first event, or the
// answer's headers, as a provider does with a long answer that is not
// streamed or with a stream in its queue.
func TestStreamKeepsItsSlotPastTheLeaseTime(t *testing.T) {
	r := startRedis(t)
	for _, headersLate := range []bool{false, true} {
		name := "stream held open"
		if headersLate {
			name = "headers held"
		}
		t.Run(name, func(t *testing.T) {
			testLongRequestKeepsItsSlot(t, r, headersLate)
		})
	}
}

func testLongRequestKeepsItsSlot(t *testing.T, r *testRedis, headersLate bool) {
	account := "sk-stream-account-Hv6Kq3Zx" + fmt.Sprint(headersLate)
	spare := "sk-stream-spare-Jt9Bw2Mc" + fmt.Sprint(headersLate)
	prefix := fmt.Sprintf("stream-%v:", headersLate)
	const lease = time.Second // the least WithLeaseTime allows
	hold := make(chan struct{})
	u := startUpstream(t, func(secret string, _ int, w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Test") != "long" {
			return
		}
		if !headersLate {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"h\"}}]}\n\n")
			w.(http.Flusher).Flush()
		}
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
		if headersLate {
			io.WriteString(w, okAnswer)
		} else {
			io.WriteString(w, "data: [DONE]\n\n")
		}
	})
	newStorePool := func() (*keypool.Pool, *http.Client) {
		store := New(r.client(t), WithPrefix(prefix), WithLeaseTime(lease))
		t.Cleanup(func() { store.Close() })
		return newPool(t, store, []keypool.Key{
			{Secret: account, Name: "acme", Account: "acme", MaxConcurrent: 1, Priority: 1},
			{Secret: spare, Name: "spare"},
		}, keypool.WithMaxWait(5*time.Second), keypool.WithSpillAfter(20*time.Millisecond))
	}
	_, clientA := newStorePool()
	b, clientB := newStorePool()

	// a's request, read to its end once the upstream lets it go.
	began := time.Now()
	longDone := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, u.URL+"/v1/chat/completions",
			strings.NewReader(`{"model":"deepseek-chat","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("X-Test", "long")
		resp, err := clientA.Do(req)
		if err != nil {
			longDone <- err
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && (resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "choices")) {
			err = fmt.Errorf("HTTP %d: %q", resp.StatusCode, body)
		}
		longDone <- err
	}()
	waitFor(t, "a's request upstream", func() bool { return u.count(account) == 1 })
	if got := u.count(spare); got != 0 {
		t.Fatalf("a's request went to the spare key too: %d requests", got)
	}

	// Three lease times, b asking all along, and a third replica asking
	// the store itself without pause, as b does only every so often: a
	// lease renewed late is lost in a moment.
	probe := New(r.client(t), WithPrefix(prefix), WithLeaseTime(lease))
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
					got = append(got, fmt.Sprintf("%v after a's request began", time.Since(began).Round(time.Millisecond)))
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
	close(stop)
	if got := <-probed; len(got) > 0 {
		t.Errorf("another replica got the account's only slot %d times while a's request held it, first %v", taken, got)
	}
	t.Logf("b sent %d requests while a's was open", sent)
	if got := u.count(account); got != 1 {
		t.Errorf("b got the account's slot: its key got %d requests while a's request held its only slot", got-1)
	}
	if got := u.maxInFlight(account); got > 1 {
		t.Errorf("the account had %d requests in flight, over its 1", got)
	}
	if got := u.count(spare); got != sent {
		t.Errorf("the spare key got %d of b's %d requests", got, sent)
	}

	close(hold)
	if err := <-longDone; err != nil {
		t.Fatalf("a's request: %v", err)
	}
	waitFor(t, "b's request on the account after a's ended", func() bool {
		mustSend(t, clientB, u)
		return u.count(account) > 1
	})
	if st := statsOf(t, b, "acme"); !st.Shared {
		t.Errorf("b's stats: not shared: %+v", st)
	}
}
