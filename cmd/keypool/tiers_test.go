package main

import (
	"testing"
	"time"

	"github.com/keypool/keypool/internal/fakeupstream"
)

// TestTiersThroughProxy gives the proxy two providers in its key list:
// the upstream's keys at priority=1, and a fallback provider's key at
// the default priority 0 with its own base= and its own name for the
// model. The first provider answers every request 503: every request
// still gets a 200, served by the fallback under the model name it
// knows.
func TestTiersThroughProxy(t *testing.T) {
	primary := startSim(t, fakeupstream.Config{
		Keys:    simKeys(keyA, keyB),
		Outages: []fakeupstream.Outage{{End: time.Hour, Status: 503}},
	})
	fallback := startSim(t, fakeupstream.Config{
		Keys:   simKeys(keyC),
		Models: []string{"deepseek/deepseek-chat"}, // any other name gets a 404
	})
	keys := keyA + ";priority=1, " + keyB + ";priority=1, " +
		keyC + ";base=" + fallback.URL + ";model:deepseek-chat=deepseek/deepseek-chat"
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keys, "KEYPOOL_UPSTREAM": primary.URL, "KEYPOOL_TOKENS": token})

	const n = 20
	for i := range n {
		body := chatBody
		if i%4 == 3 {
			body = streamBody
		}
		if status, answer := p.chat(t, body); status != 200 {
			t.Fatalf("request %d: %d %.300s", i, status, answer)
		}
	}
	if got := primary.Total(); got.OK != 0 || got.ServerErrors == 0 {
		t.Errorf("primary: %d OK, %d 5xx; want 0 OK and its 503s", got.OK, got.ServerErrors)
	}
	if got := fallback.Total(); got.OK != n || got.NotFound != 0 {
		t.Errorf("fallback: %d OK, %d 404s; want %d OK and no 404 (the model is renamed for it)", got.OK, got.NotFound, n)
	}
	// The failing tier's keys are out of rotation, not the fallback's.
	for _, st := range p.pool.Stats() {
		serving := st.State.String() == "ready" || st.State.String() == "probing"
		if fallbackKey := st.Priority == 0; fallbackKey != serving {
			t.Errorf("key %s (priority %d) is %s", st.Name, st.Priority, st.State)
		}
	}
	t.Logf("primary answered %d 503s for %d requests", primary.Total().ServerErrors, n)
}
