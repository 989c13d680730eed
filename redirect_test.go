package keypool

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

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

// A secret meant for https never goes over http, even to the same host.
func TestSecretNeverFollowsADowngrade(t *testing.T) {
	for _, keys := range [][]Key{
		{{Secret: "sk-topsecret-downgrade-1"}},
		{{Secret: "sk-topsecret-downgrade-1", BaseURL: "https://api.example"}},
	} {
		d := &downgrader{seen: map[string]string{}}
		tr, _, _ := newTestTransport(t, keys, d, nil)
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
	tr, _, _ := newTestTransport(t, []Key{{Secret: "sk-gw", BaseURL: upstream.URL + "/gw"}}, upstream.Client().Transport, nil)
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
