package fakeupstream_test

import (
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/fakeupstream"
)

func TestDeepSeekCapsRequestsInFlight(t *testing.T) {
	inVirtualTime(t, func(t *testing.T) {
		s := fakeupstream.NewInMemory(fakeupstream.Config{
			Mode:     fakeupstream.DeepSeek,
			Accounts: map[string]fakeupstream.Account{"acct": {MaxInFlight: 2}},
			Keys:     map[string]fakeupstream.Key{"sk-a": {Account: "acct"}, "sk-b": {Account: "acct"}},
			Latency:  time.Second,
		})
		defer s.Close()
		answers := make([]answer, 3)
		var wg sync.WaitGroup
		for i, secret := range []string{"sk-a", "sk-b", "sk-a"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				answers[i] = chat(t, s, secret, chatBody)
			}()
		}
		wg.Wait()
		ok, limited := 0, 0
		for _, a := range answers {
			switch a.status {
			case 200:
				ok++
			case 429:
				limited++
				if a.header.Get("Retry-After") != "" || a.header.Get("X-Ratelimit-Limit-Requests") != "" {
					t.Errorf("DeepSeek 429 carries headers %v", a.header)
				}
				if e := decodeOpenAIError(t, a.body); e.Error.Code != "rate_limit_reached" {
					t.Errorf("429 code %q", e.Error.Code)
				}
			}
		}
		if ok != 2 || limited != 1 {
			t.Errorf("%d OK, %d limited", ok, limited)
		}
		if s.MaxInFlight("acct") != 2 || s.InFlight("acct") != 0 {
			t.Errorf("max in flight %d, in flight %d", s.MaxInFlight("acct"), s.InFlight("acct"))
		}
		if busy := s.Total().Busy; busy != 2*time.Second {
			t.Errorf("busy %v, want 2s", busy)
		}
	})
}

func TestSetAccountRaisesTheCap(t *testing.T) {
	inVirtualTime(t, func(t *testing.T) {
		s := fakeupstream.NewInMemory(fakeupstream.Config{
			Accounts: map[string]fakeupstream.Account{"sk-a": {MaxInFlight: 1}},
			Keys:     keys("sk-a"),
			Latency:  time.Second,
		})
		defer s.Close()
		concurrently := func() (ok int) {
			var mu sync.Mutex
			var wg sync.WaitGroup
			for range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if chat(t, s, "sk-a", chatBody).status == 200 {
						mu.Lock()
						ok++
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			return ok
		}
		if ok := concurrently(); ok != 1 {
			t.Errorf("cap 1: %d OK", ok)
		}
		s.SetAccount("sk-a", fakeupstream.Account{MaxInFlight: 3})
		if ok := concurrently(); ok != 3 {
			t.Errorf("cap 3: %d OK", ok)
		}
	})
}

func TestSetKeyRevokes(t *testing.T) {
	s := start(t, fakeupstream.Config{Keys: keys("sk-a")})
	if a := chat(t, s, "sk-a", chatBody); a.status != 200 {
		t.Fatalf("status %d", a.status)
	}
	s.SetKey("sk-a", fakeupstream.Key{Fault: fakeupstream.FaultRevoked})
	if a := chat(t, s, "sk-a", chatBody); a.status != 401 {
		t.Errorf("revoked key: status %d", a.status)
	}
}

func TestOpenAIBucketsAnswer429WithRetryAfter(t *testing.T) {
	inVirtualTime(t, func(t *testing.T) {
		s := fakeupstream.NewInMemory(fakeupstream.Config{
			Mode:     fakeupstream.OpenAI,
			Accounts: map[string]fakeupstream.Account{"sk-a": {RPM: 2, TPM: 1000}},
			Keys:     keys("sk-a"),
		})
		defer s.Close()
		for i := range 2 {
			a := chat(t, s, "sk-a", chatBody)
			if a.status != 200 || a.header.Get("X-Ratelimit-Limit-Requests") != "2" || a.header.Get("X-Ratelimit-Limit-Tokens") != "1000" {
				t.Fatalf("request %d: status %d, headers %v", i, a.status, a.header)
			}
		}
		a := chat(t, s, "sk-a", chatBody)
		if a.status != 429 || a.header.Get("Retry-After") != "30" || a.header.Get("Retry-After-Ms") != "30001" {
			t.Fatalf("third request: status %d, headers %v", a.status, a.header)
		}
		if a.header.Get("X-Ratelimit-Remaining-Requests") != "0" {
			t.Errorf("remaining requests %q", a.header.Get("X-Ratelimit-Remaining-Requests"))
		}
		time.Sleep(30 * time.Second)
		if a := chat(t, s, "sk-a", chatBody); a.status != 200 {
			t.Errorf("after the wait: status %d", a.status)
		}
		if c := s.Counters("sk-a"); c.OK != 3 || c.RateLimited != 1 {
			t.Errorf("counters %+v", c)
		}
	})
}
