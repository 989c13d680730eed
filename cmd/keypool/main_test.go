package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeupstream"
	"go.uber.org/goleak"
)

// binDir holds the binary built for the tests that run it as a process.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keypool-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Secrets the tests use. Their masked forms end in the last four bytes.
const (
	keyA  = "sk-test-aaaaaaaaaaaaaaaa0001"
	keyB  = "sk-test-bbbbbbbbbbbbbbbb0002"
	keyC  = "sk-test-cccccccccccccccc0003"
	keyD  = "sk-test-dddddddddddddddd0004"
	token = "tok-client-s3cr3t-0000000000000001"
)

const chatBody = `{"model":"deepseek-chat","messages":[{"role":"user","content":"hi"}]}`
const streamBody = `{"model":"deepseek-chat","stream":true,"messages":[{"role":"user","content":"hi"}]}`

// simKeys makes the simulator accept these secrets.
func simKeys(secrets ...string) map[string]fakeupstream.Key {
	m := map[string]fakeupstream.Key{}
	for _, s := range secrets {
		m[s] = fakeupstream.Key{}
	}
	return m
}

func startSim(t testing.TB, cfg fakeupstream.Config) *fakeupstream.Server {
	t.Helper()
	sim := fakeupstream.New(cfg)
	t.Cleanup(sim.Close)
	// fakeupstream.New sets its start time after its server has started,
	// unguarded, and reads it under its mutex: taking the mutex here puts
	// the write before every request for the race detector, which
	// otherwise reports it when the first request comes from another
	// process (TestNodeClient). The simulator is not this package's.
	sim.Total()
	return sim
}

// syncBuffer is a log sink that tests read while the proxy writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// envFunc serves a fixed environment, with a listen address on a free
// loopback port unless the test sets one.
func envFunc(env map[string]string) func(string) string {
	full := map[string]string{"KEYPOOL_ADDR": "127.0.0.1:0"}
	for k, v := range env {
		full[k] = v
	}
	return func(name string) string { return full[name] }
}

// testProxy is a proxy served in-process.
type testProxy struct {
	*server
	URL     string
	logs    *syncBuffer
	signals chan os.Signal
	cancel  context.CancelFunc
	done    chan error
	client  *http.Client
}

// proxyOption adjusts the configuration before the server is built.
type proxyOption func(*config)

// startProxy runs the proxy in-process as run would, configured by env,
// and checks at the end that its logs hold none of the secrets it knew.
func startProxy(t testing.TB, env map[string]string, opts ...proxyOption) *testProxy {
	t.Helper()
	cfg, err := loadConfig(nil, envFunc(env), io.Discard)
	if err != nil {
		t.Fatalf("loadConfig: %v", err)
	}
	for _, o := range opts {
		o(&cfg)
	}
	keys, err := cfg.keys.load()
	if err != nil {
		t.Fatalf("keys: %v", err)
	}
	logs := &syncBuffer{}
	s, err := newServer(cfg, keys, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatalf("newServer: %v", err)
	}
	if err := s.listen(); err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &testProxy{
		server:  s,
		URL:     "http://" + s.mainLn.Addr().String(),
		logs:    logs,
		signals: make(chan os.Signal, 4),
		cancel:  cancel,
		done:    make(chan error, 1),
		client:  &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
	}
	go func() { p.done <- s.serve(ctx, p.signals) }()
	secrets := append(slicesOf(keys), cfg.tokens...)
	t.Cleanup(func() {
		p.stop(t)
		p.client.CloseIdleConnections()
		assertNoSecrets(t, "proxy log", logs.String(), secrets...)
	})
	return p
}

func slicesOf(keys []keypool.Key) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.Secret
	}
	return out
}

// stop shuts the proxy down, if it is still running, and returns serve's
// result.
func (p *testProxy) stop(t testing.TB) error {
	t.Helper()
	p.cancel()
	select {
	case err, ok := <-p.done:
		if ok {
			close(p.done)
			return err
		}
		return nil
	case <-time.After(30 * time.Second):
		t.Fatal("proxy did not stop within 30s")
		return nil
	}
}

// do sends a request to the proxy with the client token, unless the
// header says otherwise.
func (p *testProxy) do(t testing.TB, method, path, body string, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, p.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// chat sends a chat completion and returns the status and body.
func (p *testProxy) chat(t testing.TB, body string) (int, string) {
	t.Helper()
	resp := p.do(t, "POST", "/v1/chat/completions", body, nil)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading answer: %v", err)
	}
	return resp.StatusCode, string(b)
}

// inFlight sums the pool's requests in flight.
func (p *testProxy) inFlight() int {
	n := 0
	for _, st := range p.pool.Stats() {
		n += st.InFlight
	}
	return n
}

// waitFor polls cond until it holds, failing the test after limit.
func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// assertNoSecrets fails if text holds any secret.
func assertNoSecrets(t testing.TB, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s holds a secret (%s…): %.2000s", what, s[:6], text)
		}
	}
}

// apiErrorOf decodes an OpenAI error body, failing if it is not one.
func apiErrorOf(t testing.TB, body string) apiErrorDetail {
	t.Helper()
	var e apiError
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
		t.Fatalf("not an OpenAI error body (%v): %q", err, body)
	}
	return e.Error
}

// sseData reads the data lines of an SSE stream as they arrive.
func sseData(r io.Reader) <-chan string {
	out := make(chan string)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				out <- line
			}
		}
	}()
	return out
}

// writeFile writes a key file for a test.
func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

var (
	buildOnce sync.Once
	buildErr  error
)

// binary builds the command once per test run and returns its path.
func binary(t testing.TB) string {
	t.Helper()
	path := filepath.Join(binDir, "keypool")
	if runtime.GOOS == "windows" {
		path += ".exe"
	}
	buildOnce.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("go not on PATH: %w", err)
			return
		}
		out, err := exec.Command(goBin, "build", "-o", path, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return path
}
