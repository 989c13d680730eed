package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/keypool/keypool/internal/fakeupstream"
)

func getJSON(t *testing.T, c *http.Client, url string, v any) int {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode
}

func TestHealthz(t *testing.T) {
	sim := startSim(t, fakeupstream.Config{Keys: map[string]fakeupstream.Key{
		keyA: {Fault: fakeupstream.FaultRevoked}, keyB: {Fault: fakeupstream.FaultRevoked},
	}})
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keyA + "," + keyB, "KEYPOOL_UPSTREAM": sim.URL, "KEYPOOL_TOKENS": token})
	var rep healthReport
	// No token needed: probes do not carry one.
	if status := getJSON(t, p.client, p.URL+"/healthz", &rep); status != 200 || rep != (healthReport{Status: "ok", Keys: 2, Serving: 2}) {
		t.Errorf("fresh pool: %d %+v", status, rep)
	}
	// Both keys answer 401, so both are disabled.
	if status, body := p.chat(t, chatBody); status != 401 {
		t.Fatalf("status %d: %s", status, body)
	}
	rep = healthReport{}
	if status := getJSON(t, p.client, p.URL+"/healthz", &rep); !allDisabled(status, rep) {
		t.Errorf("every key refused: %d %+v", status, rep)
	}
	// Requests now fail at once with 503 rather than wait.
	status, body := p.chat(t, chatBody)
	if status != 503 || apiErrorOf(t, body).Code != "no_key_available" {
		t.Errorf("no key can serve: %d %s", status, body)
	}
	if err := p.pool.Enable("sk-test-…0002"); err != nil {
		t.Fatal(err)
	}
	if status := getJSON(t, p.client, p.URL+"/healthz", &rep); status != 200 || rep.Serving != 1 {
		t.Errorf("one key enabled: %d %+v", status, rep)
	}
}

// allDisabled reports whether /healthz answered that both keys are
// disabled, and when they are tried again.
func allDisabled(status int, rep healthReport) bool {
	return status == 503 && rep.Status == "unavailable" && rep.Serving == 0 &&
		strings.Contains(rep.Reason, "all 2 keys are disabled") && strings.Contains(rep.Reason, "tried again at")
}

func TestHealthzRefusesPost(t *testing.T) {
	sim := startSim(t, fakeupstream.Config{Keys: simKeys(keyA)})
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keyA, "KEYPOOL_UPSTREAM": sim.URL, "KEYPOOL_TOKENS": token})
	resp, err := p.client.Post(p.URL+"/healthz", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz: %d", resp.StatusCode)
	}
}

func TestMetrics(t *testing.T) {
	sim := startSim(t, fakeupstream.Config{Keys: simKeys(keyA, keyB)})
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keyA + ";max=3," + keyB + `;name=b"\x`, "KEYPOOL_UPSTREAM": sim.URL, "KEYPOOL_TOKENS": token})
	for range 4 {
		if status, body := p.chat(t, chatBody); status != 200 {
			t.Fatalf("%d %s", status, body)
		}
	}
	resp, err := p.client.Get(p.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(b)
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", resp.Header.Get("Content-Type"))
	}
	// The pool's series, from keypoolprom, with keys named by their
	// masked secret or their name=.
	for _, want := range []string{
		"# TYPE keypool_upstream_requests_total counter",
		`keypool_upstream_requests_total{key="sk-test-…0001",outcome="ok"} 2`,
		`keypool_upstream_requests_total{key="b\"\\x",outcome="ok"} 2`,
		`keypool_requests_total{code="200"} 4`,
		"keypool_request_attempts_count 4",
		`keypool_key_limit{key="sk-test-…0001"} 3`,
		`keypool_key_in_flight{key="sk-test-…0001"} 0`,
		`keypool_key_state{key="sk-test-…0001",state="ready"} 1`,
		`keypool_key_state{key="sk-test-…0001",state="disabled"} 0`,
		`keypool_key_tokens_total{key="sk-test-…0001"} `,
		`keypool_key_priority{key="b\"\\x"} 0`,
		`keypool_upstream_latency_seconds_count{key="sk-test-…0001"} 2`,
		// The process's own, as the sidecar is a process of its own.
		"go_goroutines ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s:\n%s", want, text)
		}
	}
	if strings.Contains(text, "keypool_key_requests_total") {
		t.Error("the stand-in's series are still served")
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q", resp.Header.Get("Cache-Control"))
	}
	assertNoSecrets(t, "metrics", text, keyA, keyB, token)
}

func TestMetricsOnAdminAddress(t *testing.T) {
	sim := startSim(t, fakeupstream.Config{Keys: simKeys(keyA)})
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keyA, "KEYPOOL_UPSTREAM": sim.URL, "KEYPOOL_TOKENS": token,
		"KEYPOOL_ADMIN_ADDR": "127.0.0.1:0"})
	admin := "http://" + p.adminLn.Addr().String()
	resp, err := p.client.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "keypool_key_in_flight") {
		t.Errorf("admin /metrics: %d %.200s", resp.StatusCode, b)
	}
	var rep healthReport
	if status := getJSON(t, p.client, admin+"/healthz", &rep); status != 200 {
		t.Errorf("admin /healthz: %d", status)
	}
	// On the main address /metrics is no longer served: it is proxied
	// like any other path, so it needs a token.
	resp, err = p.client.Get(p.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("main /metrics without a token: %d, want 401", resp.StatusCode)
	}
	// The admin address proxies nothing.
	resp, err = p.client.Post(admin+"/v1/chat/completions", "application/json", strings.NewReader(chatBody))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 || sim.Total().Requests != 0 {
		t.Errorf("admin proxied a request: %d", resp.StatusCode)
	}
}
