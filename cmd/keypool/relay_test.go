package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordingUpstream answers every request with a chat completion and
// remembers what it saw.
type recordingUpstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []*http.Request
}

func startRecorder(t *testing.T) *recordingUpstream {
	u := &recordingUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		u.mu.Lock()
		u.seen = append(u.seen, r)
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"x","object":"chat.completion","choices":[{"message":{"role":"assistant","content":"ok"}}]}`)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *recordingUpstream) requests() []*http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*http.Request(nil), u.seen...)
}

func TestClientCredentialsNeverReachUpstream(t *testing.T) {
	up := startRecorder(t)
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keyA, "KEYPOOL_UPSTREAM": up.URL, "KEYPOOL_TOKENS": token})
	resp := p.do(t, "POST", "/v1/chat/completions?api-version=2024", chatBody, http.Header{
		"Api-Key":             {token},
		"X-Api-Key":           {token},
		"Openai-Organization": {"org-client"},
		"Openai-Project":      {"proj-client"},
		"Proxy-Authorization": {"Basic " + token},
		"X-Forwarded-For":     {"10.0.0.1"},
		"X-Request-Id":        {"kept"},
		"Accept-Encoding":     {"br"},
	})
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	seen := up.requests()
	if len(seen) != 1 {
		t.Fatalf("upstream saw %d requests", len(seen))
	}
	r := seen[0]
	if got := r.Header.Get("Authorization"); got != "Bearer "+keyA {
		t.Errorf("upstream Authorization = %q, want the pool key's", got)
	}
	for _, h := range []string{"Api-Key", "X-Api-Key", "Openai-Organization", "Openai-Project", "Proxy-Authorization", "X-Forwarded-For"} {
		if v := r.Header.Get(h); v != "" {
			t.Errorf("upstream got %s: %q", h, v)
		}
	}
	if got := r.Header.Get("Accept-Encoding"); got != "gzip" {
		t.Errorf("upstream Accept-Encoding = %q, want the proxy's own gzip: keypool reads usage from decoded bodies", got)
	}
	var dump strings.Builder
	r.Header.Write(&dump)
	assertNoSecrets(t, "upstream headers", dump.String(), token)
	if r.Header.Get("X-Request-Id") != "kept" || r.URL.RawQuery != "api-version=2024" || r.URL.Path != "/v1/chat/completions" {
		t.Errorf("upstream got %s?%s with X-Request-Id %q", r.URL.Path, r.URL.RawQuery, r.Header.Get("X-Request-Id"))
	}
}

func TestUpstreamPathPrefix(t *testing.T) {
	up := startRecorder(t)
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keyA, "KEYPOOL_UPSTREAM": up.URL + "/api/"})
	if status, body := p.chat(t, chatBody); status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	if got := up.requests()[0].URL.Path; got != "/api/v1/chat/completions" {
		t.Errorf("upstream path %q, want /api/v1/chat/completions", got)
	}
}

// rawRequest writes a request by hand, so that its request line and Host
// can be anything, and returns the status line of the answer.
func rawRequest(t *testing.T, addr, request string) string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", strings.SplitN(request, "\r\n", 2)[0], err)
	}
	return strings.TrimSpace(status)
}

func TestNoOpenRelay(t *testing.T) {
	up := startRecorder(t)
	evil := startRecorder(t)
	evilHost := strings.TrimPrefix(evil.URL, "http://")
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keyA, "KEYPOOL_UPSTREAM": up.URL, "KEYPOOL_TOKENS": token})
	addr := strings.TrimPrefix(p.URL, "http://")
	body := chatBody
	req := func(line, host string) string {
		return fmt.Sprintf("%s\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
			line, host, token, len(body), body)
	}
	cases := []struct {
		name, request string
		proxied       bool // reaches the configured upstream
	}{
		{"Host header", req("POST /v1/chat/completions HTTP/1.1", evilHost), true},
		{"absolute URI", req("POST "+evil.URL+"/v1/chat/completions HTTP/1.1", evilHost), true},
		{"absolute URI with credentials", req("POST http://user:pw@"+evilHost+"/v1/chat/completions HTTP/1.1", evilHost), true},
		{"https absolute URI", req("POST https://"+evilHost+"/v1/chat/completions HTTP/1.1", evilHost), true},
		{"X-Forwarded-Host", strings.Replace(req("POST /v1/chat/completions HTTP/1.1", addr), "Host:", "X-Forwarded-Host: "+evilHost+"\r\nHost:", 1), true},
		{"CONNECT", req("CONNECT "+evilHost+" HTTP/1.1", evilHost), false},
		{"double slash path", req("POST //"+evilHost+"/v1/chat/completions HTTP/1.1", addr), false},
		{"WebSocket upgrade", strings.Replace(req("GET /v1/realtime HTTP/1.1", addr), "Connection: close", "Connection: Upgrade\r\nUpgrade: websocket", 1), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(up.requests())
			status := rawRequest(t, addr, c.request)
			if n := len(evil.requests()); n != 0 {
				t.Fatalf("the other host got %d requests (status %s)", n, status)
			}
			t.Logf("answer: %s", status)
			got := len(up.requests()) - before
			if c.proxied && (got != 1 || !strings.Contains(status, " 200 ")) {
				t.Fatalf("%s, %d requests upstream; want 200 from the configured upstream", status, got)
			}
			if !c.proxied && (got != 0 || strings.Contains(status, " 200 ")) {
				t.Fatalf("%s, %d requests upstream; want a refusal", status, got)
			}
		})
	}
	for _, r := range up.requests() {
		if r.Host != strings.TrimPrefix(up.URL, "http://") {
			t.Errorf("upstream request had Host %q", r.Host)
		}
	}
}

func TestUpstreamRedirectIsNotFollowed(t *testing.T) {
	evil := startRecorder(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, evil.URL+"/steal", http.StatusTemporaryRedirect)
	}))
	defer up.Close()
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keyA, "KEYPOOL_UPSTREAM": up.URL, "KEYPOOL_TOKENS": token})
	p.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp := p.do(t, "POST", "/v1/chat/completions", chatBody, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || len(evil.requests()) != 0 {
		t.Errorf("status %d, %d requests to the redirect's host; want the 307 handed back, nothing sent", resp.StatusCode, len(evil.requests()))
	}
}

func TestKeyBaseURLWins(t *testing.T) {
	up := startRecorder(t)
	own := startRecorder(t)
	u, _ := url.Parse(own.URL)
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keyA + ";base=" + own.URL + "/prefix", "KEYPOOL_UPSTREAM": up.URL})
	if status, body := p.chat(t, chatBody); status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	if len(up.requests()) != 0 || len(own.requests()) != 1 {
		t.Fatalf("upstream %d, key's base %d requests", len(up.requests()), len(own.requests()))
	}
	if r := own.requests()[0]; r.URL.Path != "/prefix/v1/chat/completions" || r.Host != u.Host {
		t.Errorf("key's base got %s for host %s", r.URL.Path, r.Host)
	}
}
