package redisstore

import (
	"net/http"
	"testing"
	"time"

	"github.com/keypool/keypool"
)

// What one replica learns of an account from its provider holds in
// another at once: a 429 with Retry-After: 30 cools the account, a 402
// (insufficient balance) disables it. Pool b's next request is not sent
// with the account's key, and b's Stats shows the account's state.
//
// Both pools rank the account's key first (Priority 1) and have a spare
// key of its own account below it, so that every request goes to the
// account's key while it may serve, and elsewhere when it may not.
func TestReplicaBlocksHoldInOthersAtOnce(t *testing.T) {
	r := startRedis(t)
	for _, c := range []struct {
		name       string
		status     int
		retryAfter string
		code, msg  string
		state      keypool.State
	}{
		{"429 cools", http.StatusTooManyRequests, "30", "rate_limit_exceeded", "Rate limit reached", keypool.StateCooling},
		{"402 disables", http.StatusPaymentRequired, "", "invalid_request_error", "Insufficient Balance", keypool.StateDisabled},
	} {
		t.Run(c.name, func(t *testing.T) {
			const blocked, spare = "sk-blocks-account-Xq4Lm9Tz", "sk-blocks-spare-Wp2Nv8Ry"
			u := startUpstream(t, func(secret string, n int, w http.ResponseWriter, _ *http.Request) {
				if secret == blocked && n == 0 {
					refuse(w, c.status, c.retryAfter, c.code, c.msg)
				}
			})
			store := New(r.client(t), WithPrefix("blocks:"+c.name+":"))
			t.Cleanup(func() { store.Close() })
			keys := []keypool.Key{
				{Secret: blocked, Name: "acme", Account: "acme", Priority: 1},
				{Secret: spare, Name: "spare", Priority: 0},
			}
			a, clientA := newPool(t, store, keys)
			b, clientB := newPool(t, store, keys)

			mustSend(t, clientA, u) // the account's key refuses it; the spare serves it
			if got := u.count(blocked); got != 1 {
				t.Fatalf("the account's key got %d requests from a, want 1", got)
			}
			if st := statsOf(t, a, "acme"); st.State != c.state {
				t.Fatalf("a's stats: %v, want %v", st.State, c.state)
			}
			spareBefore := u.count(spare)
			mustSend(t, clientB, u)
			if got := u.count(blocked); got != 1 {
				t.Errorf("b's request went to the account a was told to leave: it got %d requests", got)
			}
			if got := u.count(spare); got != spareBefore+1 {
				t.Errorf("b's request did not go to the spare key: it got %d more", got-spareBefore)
			}
			st := statsOf(t, b, "acme")
			if st.State != c.state {
				t.Errorf("b's stats: state %v, want %v", st.State, c.state)
			}
			if !st.Shared {
				t.Error("b's stats: not shared")
			}
			until := st.CooldownUntil
			if c.state == keypool.StateDisabled {
				until = st.DisabledUntil
			}
			// a's block lasts 30 s (the Retry-After) or the disable time:
			// b's must not be the store's short poll.
			if left := time.Until(until); left < 20*time.Second {
				t.Errorf("b's stats: %v until %v, %v from now; want a's", st.State, until, left)
			}
			if err := b.StoreErr(); err != nil {
				t.Errorf("b's StoreErr: %v", err)
			}
		})
	}
}
