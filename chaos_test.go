package keypool

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/keypool/keypool/internal/fakeupstream"
)

// TestChaos runs 2,000 concurrent requests while keys flip between
// healthy, rate-limited, revoked, failing, garbage-answering, resetting,
// empty-answering and slow, and while keys are added, removed and
// re-enabled. It checks the invariants that must hold whatever happens.
func TestChaos(t *testing.T) { inVirtualTime(t, testChaos) }

func testChaos(t *testing.T) {
	const requests = 2000
	rng := rand.New(rand.NewPCG(42, 42))
	secret := func(i int) string { return fmt.Sprintf("sk-chaos-%02d-%016x", i, rng.Uint64()) }
	secrets := make([]string, 12) // 8 in the pool at first, 4 added later
	simKeyMap := map[string]fakeupstream.Key{}
	accounts := map[string]fakeupstream.Account{}
	for i := range secrets {
		secrets[i] = secret(i)
		simKeyMap[secrets[i]] = fakeupstream.Key{}
		accounts[secrets[i]] = fakeupstream.Account{MaxInFlight: 12}
	}
	sim := fakeupstream.NewInMemory(fakeupstream.Config{
		Mode: fakeupstream.DeepSeek, Accounts: accounts, Keys: simKeyMap,
		ErrorRate: 0.02, ResetRate: 0.02, Latency: 2 * time.Millisecond, Jitter: 5 * time.Millisecond,
		StreamChunks: 3, Seed: 42,
	})
	base := sim.Client().Transport
	keys := make([]Key, 8)
	for i := range keys {
		keys[i] = Key{Secret: secrets[i], Weight: float64(1 + i%3)}
	}
	p := newRealClockPool(t, keys, WithMaxWait(20*time.Second), WithCooldown(10*time.Millisecond),
		WithMaxCooldown(100*time.Millisecond), WithDisableFor(50*time.Millisecond), WithEjection(3, 50*time.Millisecond))
	tr := NewTransport(p, WithBase(base), WithFirstTokenTimeout(time.Second),
		WithBackoff(func() backoff.BackOff { return backoff.NewConstantBackOff(time.Millisecond) }))

	// Every key state the pool ever had, to check their slots at the end.
	var seenMu sync.Mutex
	seen := map[*keyState]bool{}
	remember := func() {
		seenMu.Lock()
		defer seenMu.Unlock()
		for _, k := range p.snap.Load().keys {
			seen[k] = true
		}
	}
	remember()

	faults := []fakeupstream.Key{
		{}, {}, {}, {Fault: fakeupstream.FaultRateLimited}, {Fault: fakeupstream.FaultRevoked},
		{Fault: fakeupstream.FaultServerError}, {Fault: fakeupstream.FaultGarbage},
		{Fault: fakeupstream.FaultResetAfterHeaders}, {Fault: fakeupstream.FaultSlowHeaders},
		{EmptyAnswers: true}, {BreakAfterFrames: 1},
	}
	stop := make(chan struct{})
	var background sync.WaitGroup
	background.Add(2)
	go func() { // flip keys
		defer background.Done()
		r := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			sim.SetKey(secrets[r.IntN(len(secrets))], faults[r.IntN(len(faults))])
		}
	}()
	go func() { // reconfigure the pool
		defer background.Done()
		r := rand.New(rand.NewPCG(3, 4))
		next := 8
		for {
			select {
			case <-stop:
				return
			case <-time.After(15 * time.Millisecond):
			}
			st := p.Stats()
			switch {
			case next < len(secrets) && r.IntN(3) == 0:
				if err := p.Add(Key{Secret: secrets[next]}); err != nil {
					t.Error(err)
				}
				next++
			case len(st) > 4 && r.IntN(3) == 0:
				if err := p.Remove(st[r.IntN(len(st))].Name); err != nil {
					t.Error(err)
				}
			default:
				for _, s := range st {
					p.Enable(s.Name)
				}
				p.SetWeight(st[r.IntN(len(st))].Name, float64(1+r.IntN(4)))
			}
			remember()
		}
	}()

	var (
		outputs   strings.Builder // every error and status the callers saw
		outMu     sync.Mutex
		responses atomic.Int64
		errs      atomic.Int64
		both      atomic.Int64
	)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for i := range requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := i%5 == 0
			body := fmt.Sprintf(`{"model":"deepseek-chat","stream":%v,"messages":[{"role":"user","content":"request %d %s"}]}`,
				stream, i, strings.Repeat("x", i%300))
			sum := sha256.Sum256([]byte(body))
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, sim.URL+"/v1/chat/completions", nil)
			if i%2 == 0 { // replayed from GetBody
				req.Body = io.NopCloser(bytes.NewBufferString(body))
				req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }
			} else { // read once and replayed from memory
				req.Body = io.NopCloser(strings.NewReader(body))
			}
			req.Header.Set("X-Body-Sha256", hex.EncodeToString(sum[:]))
			resp, err := tr.RoundTrip(req)
			switch {
			case resp != nil && err != nil:
				both.Add(1)
			case resp != nil:
				responses.Add(1)
				_, readErr := io.ReadAll(resp.Body)
				resp.Body.Close()
				outMu.Lock()
				fmt.Fprintf(&outputs, "%d %v\n", resp.StatusCode, readErr)
				outMu.Unlock()
			case err != nil:
				errs.Add(1)
				outMu.Lock()
				fmt.Fprintf(&outputs, "%v\n%+v\n", err, err)
				outMu.Unlock()
			default:
				both.Add(1) // neither
			}
		}()
	}
	wg.Wait()
	close(stop)
	background.Wait()
	remember()
	sim.Close()

	t.Logf("%d requests: %d responses, %d errors; upstream saw %+v", requests, responses.Load(), errs.Load(), sim.Total())
	if both.Load() != 0 || responses.Load()+errs.Load() != requests {
		t.Errorf("%d calls returned both or neither a response and an error", both.Load())
	}
	if m := sim.Total().BodyMismatches; m != 0 {
		t.Errorf("%d request bodies were replayed wrong", m)
	}
	for k := range seen {
		if k.inflight.Load() != 0 || k.account.slots.inFlight() != 0 {
			t.Errorf("%s: %d in flight on the key, %d on its account, after every call returned", k.name, k.inflight.Load(), k.account.slots.inFlight())
		}
	}
	if p.nwait.Load() != 0 || p.waiters.Len() != 0 {
		t.Errorf("%d waiters left", p.nwait.Load())
	}
	everything := outputs.String() + fmt.Sprintf("%v %+v %#v %v", p.Stats(), p.Stats(), p.Stats(), keys)
	for _, s := range secrets {
		if strings.Contains(everything, s) || strings.Contains(everything, s[len(s)-12:]) {
			t.Errorf("secret %s… appears in the callers' output or Stats", s[:12])
		}
	}
}
