package keypool

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A classifier sees the whole 2xx body, and a 2xx answer it retried
// reaches the caller whole when no other attempt can be made.
func TestClassifierSeesTheWholeBody(t *testing.T) {
	const body = "\n{\"id\":\"x\",\"answer\":42}"
	srv, _ := fixedAnswer(t, 200, "application/json", body)
	var seen []string
	var mu sync.Mutex
	tr, _, _ := newFakeClockTransport(t, keysOf("sk-a"), srv.Client().Transport, nil,
		WithClassifier(func(resp *http.Response, err error, def Outcome) Outcome {
			b, _ := io.ReadAll(resp.Body)
			mu.Lock()
			seen = append(seen, string(b))
			mu.Unlock()
			return def
		}))
	resp, err := post(t, tr, srv.URL, chatBody)
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, resp)
	if len(seen) != 1 || seen[0] != body {
		t.Errorf("classifier saw %q, want %q", seen, body)
	}
	if got != body {
		t.Errorf("caller read %q after the classifier, want %q", got, body)
	}

	// The classifier rejects the 200 with a long cooldown; with one key
	// the wait bound ends the request, and the caller gets that 200 whole.
	tr2, _, _ := newFakeClockTransport(t, keysOf("sk-a"), srv.Client().Transport, []Option{WithMaxWait(time.Second)},
		WithClassifier(func(resp *http.Response, err error, def Outcome) Outcome {
			if resp != nil && resp.StatusCode == 200 {
				return Outcome{Effect: EffectRateLimited, Retry: RetryNow, Wait: time.Hour}
			}
			return def
		}))
	resp, err = post(t, tr2, srv.URL, chatBody)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); resp.StatusCode != 200 || got != body {
		t.Errorf("kept answer: %d %q, want 200 %q", resp.StatusCode, got, body)
	}
}

// A classifier that panics (resp.StatusCode on the nil response of a
// dial error) lets go of the key's slot before the panic goes on.
func TestPanickingClassifierReleasesTheSlot(t *testing.T) {
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	tr, p, _ := newFakeClockTransport(t, []Key{{Secret: "sk-a", MaxConcurrent: 1}}, base, nil,
		WithClassifier(func(resp *http.Response, err error, def Outcome) Outcome {
			if resp.StatusCode == 529 { // resp is nil after a dial error
				return Outcome{Effect: EffectFailure, Retry: RetryBackoff}
			}
			return def
		}))
	proveAll(p)
	url := closedURL(t)
	got := catchPanic(func() { post(t, tr, url, chatBody) })
	if got == nil {
		t.Log("the classifier's panic was swallowed")
	}
	if st := p.Stats()[0]; st.InFlight != 0 {
		t.Errorf("after the classifier panicked, %d slot(s) are held for ever (MaxConcurrent 1: the key is dead)", st.InFlight)
	}
}

// A classifier that reads a 2xx answer longer than 16 KiB still leaves
// the caller the whole answer.
func TestClassifierReadingALongAnswerLeavesItWhole(t *testing.T) {
	body := `{"id":"x","choices":[{"message":{"content":"` + strings.Repeat("word ", 5000) + `"}}]}`
	srv, _ := fixedAnswer(t, 200, "application/json", body)
	tr, _, _ := newFakeClockTransport(t, keysOf("sk-a"), srv.Client().Transport, nil,
		WithClassifier(func(resp *http.Response, err error, def Outcome) Outcome {
			if resp != nil {
				io.ReadAll(resp.Body)
			}
			return def
		}))
	resp, err := post(t, tr, srv.URL, chatBody)
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, resp)
	if got != body {
		t.Errorf("the caller read %d bytes of a %d-byte answer (Content-Length %d), with no error",
			len(got), len(body), resp.ContentLength)
	}
}

// A base RoundTripper that returns neither a response nor an error gets
// an error, as http.Client gives it, and the slot is released.
func TestBaseReturningNilNilIsAnError(t *testing.T) {
	tr, p, _ := newFakeClockTransport(t, keysOf("sk-a"), roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, nil
	}), nil)
	var err error
	if got := catchPanic(func() { _, err = post(t, tr, "http://api.example", chatBody) }); got != nil {
		t.Fatalf("RoundTrip panicked: %v", got)
	}
	if err == nil {
		t.Error("no error for a nil response")
	}
	if st := p.Stats()[0]; st.InFlight != 0 {
		t.Errorf("%d in flight", st.InFlight)
	}
}

// A response without a Header map (hand-written bases and mocks) is
// handled as http.Client handles it.
func TestBaseResponseWithNilHeader(t *testing.T) {
	tr, p, _ := newFakeClockTransport(t, keysOf("sk-a"), roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Body != nil {
			r.Body.Close()
		}
		return &http.Response{StatusCode: 503, Body: io.NopCloser(strings.NewReader(`{"error":"busy"}`)), Request: r}, nil
	}), nil)
	var resp *http.Response
	var err error
	if got := catchPanic(func() { resp, err = post(t, tr, "http://api.example", chatBody) }); got != nil {
		t.Fatalf("RoundTrip panicked: %v", got)
	}
	if err != nil || resp.StatusCode != 503 {
		t.Errorf("got %v, %v; want the 503", resp, err)
	} else {
		readAll(t, resp)
	}
	if st := p.Stats()[0]; st.InFlight != 0 {
		t.Errorf("%d in flight", st.InFlight)
	}
}

// Credential headers are removed whatever the case of their names: a
// client filling the map directly ("authorization") sends no placeholder.
func TestNonCanonicalCredentialHeaderIsStripped(t *testing.T) {
	var got atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(strings.Join(r.Header.Values("Authorization"), " | "))
	}))
	defer srv.Close()
	tr, _, _ := newFakeClockTransport(t, keysOf("sk-a"), srv.Client().Transport, nil)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(chatBody))
	req.Header = http.Header{"authorization": {"Bearer client-placeholder"}, "content-type": {"application/json"}}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if got.Load() != "Bearer sk-a" {
		t.Errorf("upstream saw Authorization %q, want only the key's", got.Load())
	}
}

// Each key sends its secret its own way: its Auth style, else the
// transport's, or a header of its own; the caller's copies of any of
// those headers never go upstream.
func TestPerKeyAuth(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]http.Header{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = r.Header.Clone()
		mu.Unlock()
	}))
	defer srv.Close()
	keys := []Key{
		{Secret: "sk-default", BaseURL: srv.URL + "/default"},
		{Secret: "sk-bearer", BaseURL: srv.URL + "/bearer", Auth: AuthBearer},
		{Secret: "sk-azure", BaseURL: srv.URL + "/azure", Auth: AuthAPIKey},
		{Secret: "sk-own", BaseURL: srv.URL + "/own", Header: "x-goog-api-key", Auth: AuthAPIKey},
	}
	tr, p, _ := newFakeClockTransport(t, keys, srv.Client().Transport, nil, WithAuth(AuthXAPIKey))
	for _, st := range p.Stats() {
		for _, other := range p.Stats() {
			if other.Name != st.Name {
				p.Disable(other.Name)
			}
		}
		p.Enable(st.Name)
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(chatBody))
		req.Header.Set("Authorization", "Bearer placeholder")
		req.Header.Set("Api-Key", "placeholder")
		req.Header["x-goog-api-key"] = []string{"placeholder"}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
	}
	want := map[string]http.Header{
		"/default/v1/chat/completions": {"X-Api-Key": {"sk-default"}},
		"/bearer/v1/chat/completions":  {"Authorization": {"Bearer sk-bearer"}},
		"/azure/v1/chat/completions":   {"Api-Key": {"sk-azure"}},
		"/own/v1/chat/completions":     {"X-Goog-Api-Key": {"sk-own"}},
	}
	for path, w := range want {
		h := seen[path]
		for _, name := range []string{"Authorization", "Api-Key", "X-Api-Key", "X-Goog-Api-Key"} {
			if got := h.Values(name); !slices.Equal(got, w[name]) {
				t.Errorf("%s: %s is %q, want %q", path, name, got, w[name])
			}
		}
	}
}
