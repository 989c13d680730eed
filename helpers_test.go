package keypool

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/keypool/keypool/internal/fakeupstream"
)

const chatBody = `{"model":"deepseek-chat","messages":[{"role":"user","content":"hi"}]}`

// startInMemorySim starts the simulator on an in-memory network, for
// tests in virtual time (see inVirtualTime), and closes it at the end.
func startInMemorySim(t *testing.T, cfg fakeupstream.Config) *fakeupstream.Server {
	t.Helper()
	s := fakeupstream.NewInMemory(cfg)
	t.Cleanup(s.Close)
	return s
}

// startLoopbackSim starts the simulator on loopback TCP, for tests in
// real time, and closes it at the end.
func startLoopbackSim(t *testing.T, cfg fakeupstream.Config) *fakeupstream.Server {
	t.Helper()
	s := fakeupstream.New(cfg)
	t.Cleanup(s.Close)
	return s
}

// newFakeClockTransport builds a pool on a fake clock and a transport whose
// base talks to loopback and whose backoff does not sleep.
func newFakeClockTransport(t *testing.T, keys []Key, base http.RoundTripper, popts []Option, topts ...TransportOption) (*Transport, *Pool, *fakeClock) {
	t.Helper()
	p, c := newFakeClockPool(t, keys, popts...)
	opts := append([]TransportOption{WithBase(base), WithBackoff(func() backoff.BackOff { return &backoff.ZeroBackOff{} })}, topts...)
	return NewTransport(p, opts...), p, c
}

func post(t *testing.T, rt http.RoundTripper, url, body string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer client-placeholder")
	req.Header.Set("Content-Type", "application/json")
	return rt.RoundTrip(req)
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func keysOf(secrets ...string) []Key {
	keys := make([]Key, len(secrets))
	for i, s := range secrets {
		keys[i] = Key{Secret: s}
	}
	return keys
}

func simKeys(faults map[string]fakeupstream.Fault, secrets ...string) map[string]fakeupstream.Key {
	m := map[string]fakeupstream.Key{}
	for _, s := range secrets {
		m[s] = fakeupstream.Key{Fault: faults[s]}
	}
	return m
}

// scripted answers each request with the next status and headers of a
// script, per key, and records what it saw.
type scripted struct {
	mu     sync.Mutex
	script map[string][]func(w http.ResponseWriter)
	seen   []string // secrets, in order
	bodies []string
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	secret := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.seen = append(s.seen, secret)
	s.bodies = append(s.bodies, string(b))
	var step func(http.ResponseWriter)
	if q := s.script[secret]; len(q) > 0 {
		step, s.script[secret] = q[0], q[1:]
	}
	s.mu.Unlock()
	if step == nil {
		io.WriteString(w, `{"ok":true}`)
		return
	}
	step(w)
}

func status(code int, body string, header ...string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

// closedURL is an address nothing listens on.
func closedURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func (s *scripted) seenCopy() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

func newFakeClockPool(t *testing.T, keys []Key, opts ...Option) (*Pool, *fakeClock) {
	t.Helper()
	c := newFakeClock()
	p, err := New(keys, append([]Option{withClock(c)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return p, c
}

// proveAll marks every key as having answered, as after a first success.
func proveAll(p *Pool) {
	for _, k := range p.snap.Load().keys {
		k.proven.Store(true)
	}
}

func mustAcquire(t *testing.T, p *Pool, r *acquireRequest) *lease {
	t.Helper()
	l, err := acquireFor(p, context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// acquireFor takes a key for r from p, waiting at most the pool's
// maximum wait, as a request's first attempt does.
func acquireFor(p *Pool, ctx context.Context, r *acquireRequest) (*lease, error) {
	l, _, err := p.acquire(ctx, r, p.cfg.maxWait)
	return l, err
}

func newRealClockPool(t *testing.T, keys []Key, opts ...Option) *Pool {
	t.Helper()
	p, err := New(keys, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// testNow is the fake clock's starting time.
var testNow = newFakeClock().Now()

func gzipped(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	io.WriteString(zw, s)
	zw.Close()
	return b.Bytes()
}

func gunzip(t *testing.T, b []byte) string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	return string(out)
}

// postGzip posts with the caller's own Accept-Encoding, so Go's transport
// does not decompress.
func postGzip(t *testing.T, rt http.RoundTripper, url, body string) (*http.Response, error) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Accept-Encoding", "gzip")
	return rt.RoundTrip(req)
}

// sseUpstream serves a fixed stream with the given content type, then
// stalls until the request ends, so that only what is sent can be read.
func sseUpstream(t *testing.T, contentType, stream string) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", contentType)
		io.WriteString(w, stream)
		w.(http.Flusher).Flush()
		select {
		case <-stop:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(stop); srv.Close() })
	return srv, &hits
}

// readPrefix reads exactly len(want) bytes of body.
func readPrefix(t *testing.T, body io.Reader, n int) string {
	t.Helper()
	buf := make([]byte, n)
	if _, err := io.ReadFull(body, buf); err != nil {
		t.Fatalf("reading the first %d bytes: %v", n, err)
	}
	return string(buf)
}

// downgrader plays https://api.example, which redirects everything to
// http://api.example, and records the credentials each URL received.
type downgrader struct {
	mu   sync.Mutex
	seen map[string]string // URL → credentials sent
}

func (d *downgrader) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	d.mu.Lock()
	d.seen[req.URL.String()] = req.Header.Get("Authorization") + req.Header.Get("Api-Key") + req.Header.Get("X-Api-Key")
	d.mu.Unlock()
	resp := &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("{}")), Request: req}
	if req.URL.Scheme == "https" {
		resp.StatusCode = http.StatusTemporaryRedirect
		resp.Header.Set("Location", "http://"+req.URL.Host+req.URL.Path)
	}
	return resp, nil
}

// fixedAnswer serves the same status, content type and body to every
// request, and counts them.
func fixedAnswer(t *testing.T, code int, contentType, body string) (*httptest.Server, *int) {
	t.Helper()
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		if contentType != "" {
			w.Header().Set("Content-Type", contentType)
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(code)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// stallingUpstream answers 200 with a body that starts with prefix and
// then stalls until the test ends; started is signalled once the prefix
// is on the wire.
func stallingUpstream(t *testing.T, contentType, prefix string) (*httptest.Server, *atomic.Int32, chan struct{}) {
	t.Helper()
	var hits atomic.Int32
	started := make(chan struct{}, 16)
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(200)
		io.WriteString(w, prefix)
		w.(http.Flusher).Flush()
		started <- struct{}{}
		select {
		case <-stop:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(stop); srv.Close() })
	return srv, &hits, started
}

type failingReader struct{ err error }

func (f failingReader) Read([]byte) (int, error) { return 0, f.err }

// fakeClock is a clock that moves only when Advance is called.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	seq    int
	timers map[int]fakeTimer
}

type fakeTimer struct {
	at  time.Time
	seq int
	f   func()
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), timers: map[int]fakeTimer{}}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	id := c.seq
	c.timers[id] = fakeTimer{at: c.now.Add(d), seq: id, f: f}
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, pending := c.timers[id]
		delete(c.timers, id)
		return pending
	}
}

// Advance moves time on by d and runs, in order, every timer due by then.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []fakeTimer
	for id, t := range c.timers {
		if !t.at.After(c.now) {
			due = append(due, t)
			delete(c.timers, id)
		}
	}
	c.mu.Unlock()
	sort.Slice(due, func(i, j int) bool {
		if !due[i].at.Equal(due[j].at) {
			return due[i].at.Before(due[j].at)
		}
		return due[i].seq < due[j].seq
	})
	for _, t := range due {
		t.f()
	}
}

// runLoad is the load loop of the tests: it makes the calls call(0) to
// call(n-1) from callers goroutines at once, each taking the next call
// when it is done with one, and returns how many returned an error. A
// call that returns errStopLoad ends the load early and does not count.
func runLoad(callers, n int, call func(i int) error) (failed int64) {
	var next, failures atomic.Int64
	var wg sync.WaitGroup
	for range min(callers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				switch err := call(int(i)); {
				case err == errStopLoad:
					next.Store(int64(n))
				case err != nil:
					failures.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return failures.Load()
}

// errStopLoad, returned by a call of runLoad, ends the load.
var errStopLoad = errors.New("stop the load")

// postChat posts body as a chat completion with client and reads the
// answer to its end. Anything but a 200 is an error.
func postChat(ctx context.Context, client *http.Client, url, body string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// hammer sends n chat requests from callers goroutines and returns how
// many the callers saw fail.
func hammer(t *testing.T, client *http.Client, url string, callers, n int) int64 {
	t.Helper()
	return runLoad(callers, n, func(int) error {
		err := postChat(context.Background(), client, url, chatBody)
		if err != nil {
			t.Log(err)
		}
		return err
	})
}

// roundTripFunc turns a function into a base RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// catchPanic runs f and returns what it panicked with, if anything.
func catchPanic(f func()) (panicked any) {
	defer func() { panicked = recover() }()
	f()
	return nil
}

func (d *portRedirector) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	d.mu.Lock()
	d.seen[req.URL.String()] = req.Header.Get("Authorization")
	d.mu.Unlock()
	resp := &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("{}")), Request: req}
	if strings.HasPrefix(req.URL.Path, "/v1/") {
		resp.StatusCode = http.StatusPermanentRedirect
		resp.Header.Set("Location", "https://api.example:443/v2/"+strings.TrimPrefix(req.URL.Path, "/v1/"))
	}
	return resp, nil
}

// answer is an upstream answer with the given status and no headers, for
// tests that report outcomes to a pool directly.
func answer(status int) *http.Response {
	return &http.Response{StatusCode: status, Header: http.Header{}}
}

// upstreamHit is one request as a recording upstream received it.
type upstreamHit struct {
	secret string // the key's secret, from whichever header carried it
	url    string
	header http.Header
	body   []byte
	length int64 // the request's ContentLength
}

// recordingUpstream is a base RoundTripper that records every request and
// answers it with the handler of the secret it carries (200 {} by
// default). Secrets are looked for in Authorization (Bearer), Api-Key,
// X-Api-Key and the extra header names given.
type recordingUpstream struct {
	mu       sync.Mutex
	seen     []upstreamHit
	handlers map[string]func(n int, req *http.Request) *http.Response // n: the secret's request number, from 0
	counts   map[string]int
	extra    []string
	onSend   func(s upstreamHit) // called before answering, outside the lock
}

func newRecordingUpstream(extraHeaders ...string) *recordingUpstream {
	return &recordingUpstream{handlers: map[string]func(int, *http.Request) *http.Response{}, counts: map[string]int{}, extra: extraHeaders}
}

func (u *recordingUpstream) secretOf(h http.Header) string {
	if v := h.Get("Authorization"); v != "" {
		return strings.TrimPrefix(v, "Bearer ")
	}
	for _, name := range append([]string{"Api-Key", "X-Api-Key"}, u.extra...) {
		if v := h.Get(name); v != "" {
			return v
		}
	}
	return ""
}

func (u *recordingUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
	}
	s := upstreamHit{secret: u.secretOf(req.Header), url: req.URL.String(), header: req.Header.Clone(), body: body, length: req.ContentLength}
	u.mu.Lock()
	u.seen = append(u.seen, s)
	n := u.counts[s.secret]
	u.counts[s.secret]++
	h := u.handlers[s.secret]
	onSend := u.onSend
	u.mu.Unlock()
	if onSend != nil {
		onSend(s)
	}
	var resp *http.Response
	if h != nil {
		resp = h(n, req)
	}
	if resp == nil {
		resp = jsonAnswer(200, `{"id":"ok","choices":[]}`)
	}
	resp.Request = req
	return resp, nil
}

func (u *recordingUpstream) handle(secret string, h func(n int, req *http.Request) *http.Response) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.handlers[secret] = h
}

func (u *recordingUpstream) requests() []upstreamHit {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.seen)
}

func (u *recordingUpstream) count(secret string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.counts[secret]
}

// jsonAnswer is an answer with a JSON body.
func jsonAnswer(status int, body string, header ...string) *http.Response {
	h := http.Header{"Content-Type": {"application/json"}}
	for i := 0; i+1 < len(header); i += 2 {
		h.Set(header[i], header[i+1])
	}
	return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
}

const modelNotFoundBody = `{"error":{"message":"The model does not exist","type":"invalid_request_error","code":"model_not_found"}}`

// postTo sends body as a chat completion through rt, with the given
// content type, and returns the status and body of the answer.
func postTo(t *testing.T, rt http.RoundTripper, contentType, body string) (int, string, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "https://api.example.test/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Authorization", "Bearer client-placeholder")
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return 0, "", err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b), nil
}
