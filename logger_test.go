package keypool

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/fakeupstream"
)

// syncBuffer is a bytes.Buffer that handlers on many goroutines may
// write to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The log says which key was disabled, for how long and why, at Warn;
// every attempt at Debug; and never a secret.
func TestLoggerLogsStateChangesWithTheirCause(t *testing.T) {
	const revoked, good, team = "sk-revoked-secret-0123456789abcd", "sk-good-secret-0123456789abcdef", "sk-team-secret-0123456789abcdef"
	sim := startInMemorySim(t, fakeupstream.Config{
		Keys: map[string]fakeupstream.Key{revoked: {Fault: fakeupstream.FaultRevoked}, good: {}, team: {Fault: fakeupstream.FaultRateLimited}},
	})
	var out syncBuffer
	log := slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tr, _, _ := newFakeClockTransport(t, []Key{{Secret: revoked, Weight: 1000}, {Secret: team, Account: "team", Weight: 100}, {Secret: good}},
		sim.Client().Transport, []Option{WithLogger(log)})
	resp, err := post(t, tr, sim.URL, chatBody)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)

	text := out.String()
	t.Log(text)
	for _, s := range []string{revoked, good, team} {
		if strings.Contains(text, s) || strings.Contains(text, s[len(s)-12:]) {
			t.Fatalf("the log shows a secret")
		}
	}
	var records []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("not a JSON record: %q", line)
		}
		records = append(records, r)
	}
	find := func(level, msg string) map[string]any {
		for _, r := range records {
			if r["level"] == level && r["msg"] == msg {
				return r
			}
		}
		t.Errorf("no %s record %q", level, msg)
		return nil
	}
	revokedName, teamName := maskSecret(revoked), maskSecret(team)
	if r := find("WARN", "keypool: key "+revokedName+" disabled for 30m0s: 401 invalid_api_key"); r != nil && (r["key"] != revokedName || r["cause"] != "401 invalid_api_key") {
		t.Errorf("disablement record %v", r)
	}
	find("INFO", "keypool: key "+teamName+" (account team) cooling down for 1s: 429 rate_limit_exceeded")
	find("INFO", "keypool: key "+maskSecret(good)+" ready: answered")
	attempts := 0
	for _, r := range records {
		if r["msg"] == "keypool: attempt" && r["level"] == "DEBUG" {
			attempts++
		}
	}
	if attempts != 3 {
		t.Errorf("%d attempt records, want 3", attempts)
	}
	find("DEBUG", "keypool: request")
}

func TestWithLoggerRefusesNil(t *testing.T) {
	if _, err := New(keysOf("sk-a"), WithLogger(nil)); err == nil {
		t.Error("WithLogger(nil) accepted")
	}
}

// Ejections and disablements forever read as such.
func TestLoggerSaysHowLongAStateLasts(t *testing.T) {
	at := time.Unix(1000, 0)
	for _, tc := range []struct {
		e    StateEvent
		want string
	}{
		{StateEvent{At: at, Until: at.Add(90 * time.Second)}, "1m30s"},
		{StateEvent{At: at, Until: time.Unix(0, disabledForever)}, "good (until Pool.Enable)"},
	} {
		if got := lasting(tc.e); got != tc.want {
			t.Errorf("lasting(%v) = %q, want %q", tc.e.Until, got, tc.want)
		}
	}
}
