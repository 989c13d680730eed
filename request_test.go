package keypool

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// A request that net/http would refuse to send (a header value holding
// a new line, a URL without a scheme) is the caller's mistake: it fails
// at once, is never retried, and never ejects a key.
func TestInvalidRequestFailsAtOnceAndBlamesNoKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(t *testing.T, req *http.Request, srvURL string) *http.Request
	}{
		{"header value with a new line", func(t *testing.T, req *http.Request, _ string) *http.Request {
			req.Header.Set("X-Title", "My App\n") // read from a config file, trailing new line kept
			return req
		}},
		{"base URL without a scheme", func(t *testing.T, _ *http.Request, srvURL string) *http.Request {
			// cfg.BaseURL = "127.0.0.1:port/v1" parses with scheme "127.0.0.1".
			req, err := http.NewRequest(http.MethodPost, "localhost:8080/v1/chat/completions", strings.NewReader(chatBody))
			if err != nil {
				t.Fatal(err)
			}
			return req
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hits atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				io.WriteString(w, `{"ok":true}`)
			}))
			defer srv.Close()
			tr, p, _ := newFakeClockTransport(t, keysOf("sk-a"), srv.Client().Transport, nil)
			proveAll(p)
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(chatBody))
			req = tc.edit(t, req, srv.URL)
			if _, err := tr.RoundTrip(req); err == nil {
				t.Fatal("an invalid request succeeded")
			}
			st := p.Stats()[0]
			if st.Failures != 0 || st.State != StateReady || st.Requests > 1 {
				t.Errorf("the caller's invalid request was blamed on the key: %d attempts, %d failures, state %v",
					st.Requests, st.Failures, st.State)
			}
			// The next, valid, request from another caller must still work.
			resp, err := post(t, tr, srv.URL, chatBody)
			if err != nil {
				t.Fatalf("a valid request after the invalid one failed: %v", err)
			}
			readAll(t, resp)
		})
	}
}
