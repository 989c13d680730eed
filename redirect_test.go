package keypool

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestSecretNeverFollowsRedirectToAnotherHost(t *testing.T) {
	var elsewhereAuth atomic.Value
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhereAuth.Store(r.Header.Get("Authorization") + r.Header.Get("Api-Key") + r.Header.Get("X-Api-Key"))
		io.WriteString(w, "moved")
	}))
	defer elsewhere.Close()
	var sameHostAuth atomic.Value
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, elsewhere.URL+"/x", http.StatusTemporaryRedirect)
		case "/here":
			http.Redirect(w, r, "/landed", http.StatusTemporaryRedirect)
		default:
			sameHostAuth.Store(r.Header.Get("Authorization"))
		}
	}))
	defer origin.Close()
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	tr, _, _ := newFakeClockTransport(t, keysOf("sk-topsecret"), base, nil)
	client := &http.Client{Transport: tr}

	resp, err := client.Post(origin.URL+"/away", "application/json", strings.NewReader(chatBody))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if got := elsewhereAuth.Load(); got != "" {
		t.Errorf("the other host received credentials %q", got)
	}
	resp, err = client.Post(origin.URL+"/here", "application/json", strings.NewReader(chatBody))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if got := sameHostAuth.Load(); got != "Bearer sk-topsecret" {
		t.Errorf("same-host redirect: upstream saw %q", got)
	}
}

// A BaseURL's escaped path stays escaped on the wire.
func TestEscapedBaseURLPathIsKept(t *testing.T) {
	var got atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.RequestURI)
	}))
	defer srv.Close()
	tr, _, _ := newFakeClockTransport(t, []Key{{Secret: "sk-a", BaseURL: srv.URL + "/gw/team%2Fa/openai"}}, srv.Client().Transport, nil)
	resp, err := post(t, tr, "http://placeholder.invalid", chatBody)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if got.Load() != "/gw/team%2Fa/openai/v1/chat/completions" {
		t.Errorf("upstream saw %q", got.Load())
	}
}

// A secret meant for https never goes over http, even to the same host.
func TestSecretNeverFollowsADowngrade(t *testing.T) {
	for _, keys := range [][]Key{
		{{Secret: "sk-topsecret-downgrade-1"}},
		{{Secret: "sk-topsecret-downgrade-1", BaseURL: "https://api.example"}},
	} {
		d := &downgrader{seen: map[string]string{}}
		tr, _, _ := newFakeClockTransport(t, keys, d, nil)
		client := &http.Client{Transport: tr}
		resp, err := client.Post("https://api.example/v1/chat/completions", "application/json", strings.NewReader(chatBody))
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		if got := d.seen["https://api.example/v1/chat/completions"]; got != "Bearer sk-topsecret-downgrade-1" {
			t.Errorf("BaseURL %q: the https request carried %q", keys[0].BaseURL, got)
		}
		for url, creds := range d.seen {
			if strings.HasPrefix(url, "http:") && creds != "" {
				t.Errorf("BaseURL %q: %s received credentials %q over plain http", keys[0].BaseURL, url, creds)
			}
		}
		if len(d.seen) != 2 {
			t.Errorf("BaseURL %q: requests %v, want the https one and the redirected one", keys[0].BaseURL, d.seen)
		}
	}
}

// A relative redirect from a key's BaseURL host resolves against the URL
// that was requested there, not against the client's placeholder.
func TestRelativeRedirectFromBaseURL(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.Path+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		if r.URL.Path == "/gw/v1/models" {
			w.Header().Set("Location", "/gw/v2/models")
			w.WriteHeader(http.StatusPermanentRedirect)
			return
		}
		io.WriteString(w, `{"data":[]}`)
	}))
	defer upstream.Close()
	tr, _, _ := newFakeClockTransport(t, []Key{{Secret: "sk-gw", BaseURL: upstream.URL + "/gw"}}, upstream.Client().Transport, nil)
	client := &http.Client{Transport: tr}
	resp, err := client.Get("http://placeholder.invalid/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != 200 || body != `{"data":[]}` {
		t.Errorf("got %d %q", resp.StatusCode, body)
	}
	if len(seen) != 2 || seen[1] != "/gw/v2/models Bearer sk-gw" {
		t.Errorf("upstream saw %q, want the redirect followed on the key's host with its secret", seen)
	}
}

// A redirect to a host no key belongs to needs no key: it goes on at
// once, without credentials, even while others queue for a key.
func TestRedirectThatNeedsNoKeyDoesNotQueue(t *testing.T) {
	var elsewhereHits atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhereHits.Add(1)
		io.WriteString(w, "file content")
	}))
	defer elsewhere.Close()
	home := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"ok":true}`)
	}))
	defer home.Close()
	tr, p, _ := newFakeClockTransport(t, []Key{{Secret: "sk-a", MaxConcurrent: 1}}, home.Client().Transport, nil)
	proveAll(p)
	held := mustAcquire(t, p, &acquireRequest{}) // a stream in progress
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // an ordinary request, queued for the key
		defer wg.Done()
		if resp, err := post(t, tr, home.URL, chatBody); err == nil {
			readAll(t, resp)
		}
	}()
	waitFor(t, func() bool { return p.nwait.Load() == 1 })

	first, _ := http.NewRequest(http.MethodGet, home.URL+"/v1/files/f1/content", nil)
	redirected, _ := http.NewRequest(http.MethodGet, elsewhere.URL+"/signed/f1", nil)
	redirected.Response = &http.Response{StatusCode: http.StatusFound, Request: first}
	go func() {
		defer wg.Done()
		if resp, err := tr.RoundTrip(redirected); err == nil {
			readAll(t, resp)
		}
	}()
	waitFor(t, func() bool { return elsewhereHits.Load() == 1 || p.nwait.Load() == 2 })
	if elsewhereHits.Load() == 0 {
		t.Error("a redirect to another host, which uses no key, is queued behind requests waiting for a key")
	}
	held.release()
	wg.Wait()
}

// portRedirector plays https://api.example, which redirects /v1/... to
// the same origin with its default port written out, and records the
// credentials each URL received.
type portRedirector struct {
	mu   sync.Mutex
	seen map[string]string
}

// https://api.example and https://api.example:443 are the same origin:
// the secret follows a redirect between them.
func TestRedirectWithExplicitDefaultPortKeepsTheKey(t *testing.T) {
	for _, keys := range [][]Key{
		{{Secret: "sk-port-1"}},
		{{Secret: "sk-port-1", BaseURL: "https://api.example"}},
	} {
		d := &portRedirector{seen: map[string]string{}}
		tr, _, _ := newFakeClockTransport(t, keys, d, nil)
		client := &http.Client{Transport: tr}
		resp, err := client.Get("https://api.example/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		if got := d.seen["https://api.example:443/v2/models"]; got != "Bearer sk-port-1" {
			t.Errorf("BaseURL %q: the redirect to the same origin carried %q", keys[0].BaseURL, got)
		}
	}
}
