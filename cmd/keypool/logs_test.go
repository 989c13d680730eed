package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/keypool/keypool/internal/fakeupstream"
)

// TestAccessLogs checks what the access log says, and that no request,
// good or bad, puts a key or a client token into it. (Every test's proxy
// log is also searched for secrets when the test ends.)
func TestAccessLogs(t *testing.T) {
	sim := startSim(t, fakeupstream.Config{Keys: map[string]fakeupstream.Key{keyA: {}, keyB: {Fault: fakeupstream.FaultRevoked}}})
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keyA + "," + keyB, "KEYPOOL_UPSTREAM": sim.URL, "KEYPOOL_TOKENS": token})
	p.chat(t, chatBody)
	p.chat(t, chatBody) // one of them meets the revoked key first
	resp := p.do(t, "POST", "/v1/chat/completions?key="+token, chatBody, http.Header{"Authorization": {"Bearer " + token + "-wrong"}})
	resp.Body.Close()
	resp = p.do(t, "GET", "/v1/no-such-endpoint", "", http.Header{"X-Api-Key": {keyA}, "Cookie": {"session=" + token}})
	resp.Body.Close()
	p.chat(t, `{"model":`) // the simulator answers 400

	logs := p.logs.String()
	assertNoSecrets(t, "access log", logs, keyA, keyB, token)
	var statuses []int
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] != "request" {
			continue
		}
		for _, field := range []string{"method", "path", "status", "bytes", "ms", "remote"} {
			if _, ok := rec[field]; !ok {
				t.Errorf("access log line lacks %s: %s", field, line)
			}
		}
		if strings.Contains(rec["path"].(string), "?") {
			t.Errorf("a query reached the log: %s", line)
		}
		statuses = append(statuses, int(rec["status"].(float64)))
	}
	if want := []int{200, 200, 401, 404, 400}; len(statuses) != len(want) {
		t.Errorf("statuses %v, want %v", statuses, want)
	} else {
		for i := range want {
			if statuses[i] != want[i] {
				t.Errorf("statuses %v, want %v", statuses, want)
				break
			}
		}
	}
}

// TestKeyStateChangesAreLogged checks that the proxy's log says when a
// key leaves rotation and why (keypool.WithLogger), naming it by its
// masked secret.
func TestKeyStateChangesAreLogged(t *testing.T) {
	sim := startSim(t, fakeupstream.Config{Keys: map[string]fakeupstream.Key{keyA: {}, keyB: {Fault: fakeupstream.FaultRevoked}}})
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keyA + "," + keyB, "KEYPOOL_UPSTREAM": sim.URL, "KEYPOOL_TOKENS": token})
	for range 2 { // one of them meets the revoked key first
		if status, body := p.chat(t, chatBody); status != 200 {
			t.Fatalf("%d %s", status, body)
		}
	}
	var found bool
	for _, line := range strings.Split(strings.TrimSpace(p.logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		msg, _ := rec["msg"].(string)
		if !strings.HasPrefix(msg, "keypool: key sk-test-…0002 disabled") {
			continue
		}
		found = true
		if rec["level"] != "WARN" || rec["key"] != "sk-test-…0002" || rec["state"] != "disabled" || !strings.Contains(msg, "401") {
			t.Errorf("state change logged as %s", line)
		}
	}
	if !found {
		t.Errorf("no log line says the revoked key was disabled:\n%s", p.logs.String())
	}
}
