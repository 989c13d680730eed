package redisstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool"
)

// The store, driven directly: slots, budgets, blocks, learned limits,
// lease expiry and wake-ups.
func TestStore(t *testing.T) {
	r := startRedis(t)
	s := New(r.client(t), WithPrefix("test:"), WithLeaseTime(time.Second))
	defer s.Close()
	ctx := context.Background()
	take := func(lease string, limit, rpm, tpm, tokens int) keypool.StoreTaken {
		t.Helper()
		got, err := s.Take(ctx, keypool.StoreTake{Account: "a:acme", Key: "k1", Lease: lease, Limit: limit, RPM: rpm, TPM: tpm, Tokens: tokens})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}

	t.Run("slots", func(t *testing.T) {
		for i, want := range []bool{true, true, false} {
			if got := take("s"+string(rune('0'+i)), 2, 0, 0, 0); got.OK != want || (!got.OK && got.Why != keypool.RefusedSlots) {
				t.Fatalf("take %d: %+v, want ok=%v", i, got, want)
			}
		}
		if got := take("s0", 2, 0, 0, 0); !got.OK {
			t.Error("taking a lease already held is not idempotent")
		}
		woke := make(chan string, 1)
		s.Watch(func(account string) {
			select {
			case woke <- account:
			default:
			}
		})
		time.Sleep(50 * time.Millisecond) // the subscription is under way
		if _, err := s.Release(ctx, "a:acme", "s0", 0); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-woke:
			if got != "a:acme" {
				t.Errorf("woke for %q", got)
			}
		case <-time.After(5 * time.Second):
			t.Error("no wake-up after a release")
		}
		if got := take("s2", 2, 0, 0, 0); !got.OK || got.InFlight != 2 {
			t.Errorf("after a release: %+v", got)
		}
		if err := s.SetLimit(ctx, "a:acme", 1); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.Release(ctx, "a:acme", "s1", 0); n != 1 {
			t.Errorf("after a release %d slots are held, want 1", n)
		}
		if got := take("s3", 2, 0, 0, 0); !got.OK || got.Limit != 1 {
			t.Errorf("the limit a replica asks with holds, and the learned one is returned: %+v", got)
		}
		s.Release(ctx, "a:acme", "s2", 0)
		s.Release(ctx, "a:acme", "s3", 0)
		s.SetLimit(ctx, "a:acme", 0)
	})

	t.Run("a probing replica's fair share is of the learned limit", func(t *testing.T) {
		// Replicas that learn the limit probe above it in turn: the
		// prober may take a slot past the learned limit, but its share
		// of the account while others want is of the learned one, or it
		// would hold ceil(5/2) of 4 slots here and leave the other 1.
		takeFair := func(lease string, limit int) keypool.StoreTaken {
			t.Helper()
			got, err := s.Take(ctx, keypool.StoreTake{Account: "a:fair", Key: "k1", Lease: lease, Limit: limit})
			if err != nil {
				t.Fatal(err)
			}
			return got
		}
		if err := s.SetLimit(ctx, "a:fair", 4); err != nil {
			t.Fatal(err)
		}
		for _, l := range []string{"a-1", "a-2", "a-3", "a-4"} {
			if got := takeFair(l, 4); !got.OK {
				t.Fatalf("%s alone: %+v", l, got)
			}
		}
		if got := takeFair("b-1", 4); got.OK {
			t.Fatalf("b-1 past the limit: %+v", got)
		} // b wants, for a second
		s.Release(ctx, "a:fair", "a-3", 0)
		s.Release(ctx, "a:fair", "a-4", 0)
		if got := takeFair("a-5", 5); got.OK {
			t.Errorf("replica a, probing at 5, got a third slot of 4 while b wants: %+v", got)
		}
		if got := takeFair("b-1", 4); !got.OK {
			t.Errorf("replica b, wanting, got no slot of the two free: %+v", got)
		}
	})

	t.Run("leases expire unless renewed", func(t *testing.T) {
		if !r.Real() {
			t.Skip("miniredis answers TIME with the wall clock only when told; the real server is needed")
		}
		take("e1", 2, 0, 0, 0)
		take("e2", 2, 0, 0, 0)
		time.Sleep(600 * time.Millisecond)
		if err := s.Renew(ctx, "a:acme", []string{"e1"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(600 * time.Millisecond) // e2 expired, e1 renewed
		if got := take("e3", 2, 0, 0, 0); !got.OK || got.InFlight != 2 {
			t.Errorf("after e2 expired: %+v", got)
		}
		s.Release(ctx, "a:acme", "e1", 0)
		s.Release(ctx, "a:acme", "e3", 0)
	})

	t.Run("rpm", func(t *testing.T) {
		ok := 0
		for i := range 70 {
			got := take("r"+strings.Repeat("x", i), 0, 60, 0, 0)
			if got.OK {
				ok++
				s.Release(ctx, "a:acme", "r"+strings.Repeat("x", i), 0)
			} else if got.Why != keypool.RefusedBudget || got.Until.IsZero() {
				t.Fatalf("refused: %+v", got)
			}
		}
		if ok != 60 {
			t.Errorf("a 60 RPM budget allowed %d requests at once, want its minute's 60", ok)
		}
	})

	t.Run("tpm", func(t *testing.T) {
		// A minute's 1,000 tokens: 600 reserved leave too few for 600
		// more, until the first request's usage gives back 500.
		if got := take("t1", 0, 0, 1000, 600); !got.OK {
			t.Fatalf("first reservation refused: %+v", got)
		}
		if got := take("t2", 0, 0, 1000, 600); got.OK || got.Why != keypool.RefusedBudget || got.Until.IsZero() {
			t.Fatalf("second reservation: %+v, want refused for the budget, with a time", got)
		}
		if _, err := s.Release(ctx, "a:acme", "t1", 500); err != nil {
			t.Fatal(err)
		}
		if got := take("t3", 0, 0, 1000, 600); !got.OK {
			t.Errorf("after 500 tokens came back: %+v, want the reservation", got)
		}
		s.Release(ctx, "a:acme", "t3", 0)
	})

	t.Run("blocks", func(t *testing.T) {
		for _, b := range []struct {
			what keypool.StoreRefusal
		}{{keypool.RefusedCooling}, {keypool.RefusedAccountDisabled}, {keypool.RefusedKeyDisabled}} {
			if err := s.Block(ctx, keypool.StoreBlock{Account: "a:acme", Key: "k1", What: b.what, Until: time.Now().Add(time.Minute)}); err != nil {
				t.Fatal(err)
			}
			if got := take("b", 0, 0, 0, 0); got.OK || got.Why != b.what || time.Until(got.Until) < 50*time.Second {
				t.Errorf("blocked for %d: %+v", b.what, got)
			}
			if err := s.Block(ctx, keypool.StoreBlock{Account: "a:acme", Key: "k1"}); err != nil {
				t.Fatal(err)
			}
			if got := take("b", 0, 0, 0, 0); !got.OK {
				t.Errorf("after clearing: %+v", got)
			}
			s.Release(ctx, "a:acme", "b", 0)
		}
	})

	t.Run("ping", func(t *testing.T) {
		down := New(r.client(t), WithPing())
		if err := down.Ready(ctx); err != nil {
			t.Errorf("Ready with Redis up: %v", err)
		}
		gone := New(redisClient(freeAddr(t)), WithPing())
		if _, err := keypool.New([]keypool.Key{{Secret: "sk-a"}}, keypool.WithStore(gone)); !errors.Is(err, keypool.ErrInvalidConfig) {
			t.Errorf("New with WithPing and no Redis: %v", err)
		}
		nowhere := New(redisClient(freeAddr(t)))
		defer nowhere.Close()
		if _, err := keypool.New([]keypool.Key{{Secret: "sk-a"}}, keypool.WithStore(nowhere)); err != nil {
			t.Errorf("New without WithPing and no Redis: %v, want a pool that starts on its own limits", err)
		}
	})
}

// Redis Cluster runs a script only on keys of one slot: every key of an
// account shares one hash tag, accounts get tags of their own, and a
// prefix that would add braces is refused.
func TestAccountKeysShareAHashTag(t *testing.T) {
	s := New(redisClient(freeAddr(t)), WithPrefix("p:"))
	tag := func(key string) string {
		i, j := strings.IndexByte(key, '{'), strings.IndexByte(key, '}')
		if i < 0 || j < i || strings.Count(key, "{") != 1 {
			t.Fatalf("%q has no single hash tag", key)
		}
		return key[i : j+1]
	}
	seen := map[string]string{}
	for _, account := range []string{"a:acme", "k:s:0123456789abcdef", "a:other"} {
		keys := s.keys(account)
		for _, k := range keys[1:] {
			if tag(k) != tag(keys[0]) {
				t.Errorf("%s: %q and %q have different hash tags", account, keys[0], k)
			}
		}
		if other, ok := seen[tag(keys[0])]; ok {
			t.Errorf("%s and %s share a hash tag", account, other)
		}
		seen[tag(keys[0])] = account
	}
	defer func() {
		if err, _ := recover().(error); !errors.Is(err, keypool.ErrInvalidConfig) {
			t.Errorf("WithPrefix with braces: panic %v, want ErrInvalidConfig", err)
		}
	}()
	New(redisClient(freeAddr(t)), WithPrefix("p{x}:"))
}
