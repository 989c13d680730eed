package keypool

import (
	"errors"
	"fmt"
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

// Key.Header: the caller's own value of that header, in any case, never
// goes upstream, to that key or any other; the key's secret goes in it
// once and nowhere else; a key with the transport's default Bearer next
// to it gets only its Authorization. Key.Header "Authorization" sends the
// secret as it is.
func TestKeyHeaderCollisions(t *testing.T) {
	const goog, bearer, raw = "goog-secret-0123456789", "sk-bearer-0123456789", "raw-secret-0123456789"
	up := newRecordingUpstream("X-Goog-Api-Key")
	up.handle(goog, func(int, *http.Request) *http.Response { return jsonAnswer(500, `{}`) })
	up.handle(bearer, func(int, *http.Request) *http.Response { return jsonAnswer(500, `{}`) })
	tr, _, _ := newFakeClockTransport(t, []Key{
		{Secret: goog, Priority: 2, Header: "x-goog-api-key"},
		{Secret: bearer, Priority: 1},
		{Secret: raw, Priority: 0, Header: "Authorization"},
	}, up, nil)
	req, _ := http.NewRequest(http.MethodPost, "https://api.example.test/v1/chat/completions", strings.NewReader(chatBody))
	req.Header["x-goog-api-key"] = []string{"caller-value"}
	req.Header.Set("X-Goog-Api-Key", "caller-value-2")
	req.Header.Set("Api-Key", "caller-api-key")
	req.Header.Set("Authorization", "Bearer caller")
	req.Header.Set("Content-Type", "application/json")
	before := req.Header.Clone()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if fmt.Sprint(req.Header) != fmt.Sprint(before) {
		t.Errorf("the caller's header changed: %v", req.Header)
	}
	seen := up.requests()
	if len(seen) != 3 {
		t.Fatalf("%d requests", len(seen))
	}
	for i, s := range seen {
		dump := fmt.Sprint(s.header)
		if strings.Contains(dump, "caller") {
			t.Errorf("attempt %d got a caller credential: %v", i, s.header)
		}
		for _, other := range []string{goog, bearer, raw} {
			if other != s.secret && strings.Contains(dump, other) {
				t.Errorf("attempt %d (%s) carries another key's secret %s", i, maskSecret(s.secret), maskSecret(other))
			}
		}
	}
	if v := seen[0].header.Values("X-Goog-Api-Key"); !slices.Equal(v, []string{goog}) || len(seen[0].header["x-goog-api-key"]) != 0 || seen[0].header.Get("Authorization") != "" {
		t.Errorf("goog attempt header %v", seen[0].header)
	}
	if seen[1].header.Get("Authorization") != "Bearer "+bearer || seen[1].header.Get("X-Goog-Api-Key") != "" {
		t.Errorf("bearer attempt header %v", seen[1].header)
	}
	if v := seen[2].header.Values("Authorization"); !slices.Equal(v, []string{raw}) {
		t.Errorf("raw attempt Authorization %v", v)
	}
}

// No error or Stats of a request through tiers of keys with their own
// auth, failing every way, shows a secret.
func TestNoSecretInErrorsOrStats(t *testing.T) {
	secrets := []string{"sk-one-0123456789abcdef", "sk-two-0123456789abcdef", "sk-three-0123456789abcdef"}
	up := newRecordingUpstream("X-Custom-Key")
	up.handle(secrets[0], func(int, *http.Request) *http.Response { return jsonAnswer(401, `{"error":{"message":"bad key"}}`) })
	up.handle(secrets[1], func(int, *http.Request) *http.Response { return jsonAnswer(404, modelNotFoundBody) })
	up.handle(secrets[2], func(int, *http.Request) *http.Response { return jsonAnswer(503, `{}`) })
	tr, p, _ := newFakeClockTransport(t, []Key{
		{Secret: secrets[0], Priority: 5, Auth: AuthXAPIKey},
		{Secret: secrets[1], Priority: 0, Header: "X-Custom-Key", ModelMap: map[string]string{askedModel: bModel}},
		{Secret: secrets[2], Priority: -5, Auth: AuthAPIKey},
	}, up, nil, WithMaxAttempts(10))
	var texts []string
	for range 4 {
		code, body, err := postTo(t, tr, "application/json", chatBody)
		texts = append(texts, fmt.Sprint(code, body, err))
		if err != nil {
			var ae *AttemptsError
			if errors.As(err, &ae) {
				texts = append(texts, fmt.Sprintf("%+v", ae.Attempts))
			}
		}
	}
	texts = append(texts, fmt.Sprintf("%+v", p.Stats()))
	for _, s := range secrets {
		for _, txt := range texts {
			if strings.Contains(txt, s) || strings.Contains(txt, s[3:15]) {
				t.Errorf("secret %s shown: %s", maskSecret(s), txt)
			}
		}
	}
}
