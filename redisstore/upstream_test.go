package redisstore

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool"
)

// upstream is a provider for the tests that answer each secret in a way
// of their own: answer decides, by the secret and how many requests it
// got before (0 for the first), and the upstream counts requests and the
// most in flight at once, by secret.
type upstream struct {
	*httptest.Server
	answer func(secret string, n int, w http.ResponseWriter, r *http.Request)

	mu       sync.Mutex
	got      map[string]int
	inFlight map[string]int
	peak     map[string]int
}

// startUpstream starts an upstream that answers by answer, or a 200 with
// a small chat completion when answer is nil.
func startUpstream(t *testing.T, answer func(secret string, n int, w http.ResponseWriter, r *http.Request)) *upstream {
	t.Helper()
	u := &upstream{answer: answer, got: map[string]int{}, inFlight: map[string]int{}, peak: map[string]int{}}
	if u.answer == nil {
		u.answer = func(string, int, http.ResponseWriter, *http.Request) {}
	}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	secret := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	u.mu.Lock()
	n := u.got[secret]
	u.got[secret]++
	u.inFlight[secret]++
	u.peak[secret] = max(u.peak[secret], u.inFlight[secret])
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		u.inFlight[secret]--
		u.mu.Unlock()
	}()
	ok := &headerWatcher{ResponseWriter: w}
	u.answer(secret, n, ok, r)
	if !ok.wrote {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, okAnswer)
	}
}

const okAnswer = `{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`

// headerWatcher notes whether an answer func wrote anything.
type headerWatcher struct {
	http.ResponseWriter
	wrote bool
}

func (h *headerWatcher) WriteHeader(code int) { h.wrote = true; h.ResponseWriter.WriteHeader(code) }
func (h *headerWatcher) Write(b []byte) (int, error) {
	h.wrote = true
	return h.ResponseWriter.Write(b)
}
func (h *headerWatcher) Flush() { h.wrote = true; h.ResponseWriter.(http.Flusher).Flush() }

// count returns how many requests secret got.
func (u *upstream) count(secret string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.got[secret]
}

// maxInFlight returns the most requests secret had in flight at once.
func (u *upstream) maxInFlight(secret string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.peak[secret]
}

// refuse writes an error answer in OpenAI's shape.
func refuse(w http.ResponseWriter, status int, retryAfter, code, message string) {
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	io.WriteString(w, `{"error":{"message":"`+message+`","type":"`+code+`","code":"`+code+`"}}`)
}

// newPool returns a pool of keys on store (none when nil) and a client
// that sends through it.
func newPool(t *testing.T, store keypool.Store, keys []keypool.Key, opts ...keypool.Option) (*keypool.Pool, *http.Client) {
	t.Helper()
	if store != nil {
		opts = append(opts, keypool.WithStore(store))
	}
	p, err := keypool.New(keys, opts...)
	if err != nil {
		t.Fatal(err)
	}
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	return p, &http.Client{Transport: keypool.NewTransport(p, keypool.WithBase(base))}
}

// send sends a chat completion through client to u, reads its answer and
// returns its status, or the error.
func send(ctx context.Context, client *http.Client, u *upstream) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.URL+"/v1/chat/completions", strings.NewReader(chatBody))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return resp.StatusCode, err
	}
	return resp.StatusCode, nil
}

// mustSend sends a chat completion that must get a 200.
func mustSend(t *testing.T, client *http.Client, u *upstream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if code, err := send(ctx, client, u); err != nil || code != http.StatusOK {
		t.Fatalf("request: HTTP %d, %v", code, err)
	}
}

// statsOf returns the stats of the key named name.
func statsOf(t *testing.T, p *keypool.Pool, name string) keypool.KeyStats {
	t.Helper()
	for _, st := range p.Stats() {
		if st.Name == name {
			return st
		}
	}
	t.Fatalf("no key named %q in %+v", name, p.Stats())
	return keypool.KeyStats{}
}
