package keypool

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

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

// The caller reads exactly the bytes the upstream sent, whatever they
// start with.
func TestAnswerBytesReachTheCallerUnchanged(t *testing.T) {
	for _, tc := range []struct{ name, contentType, body string }{
		{"json with leading new line", "application/json", "\n{\"a\":1}\n"},
		{"json with long leading white space", "application/json; charset=utf-8", strings.Repeat(" \r\n\t", 100) + `{"a":1}`},
		{"binary starting with white space bytes", "audio/mpeg", " \t\n\r\x00ID3\xff\xfb"},
		{"binary made only of white space bytes", "application/octet-stream", "\n\n \t\r"},
		{"no content type", "", "\n\nhello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, hits := fixedAnswer(t, 200, tc.contentType, tc.body)
			tr, p, _ := newTestTransport(t, keysOf("sk-a", "sk-b"), srv.Client().Transport, nil)
			resp, err := post(t, tr, srv.URL, chatBody)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, resp); got != tc.body {
				t.Errorf("caller read %q, upstream sent %q", got, tc.body)
			}
			if resp.ContentLength != int64(len(tc.body)) {
				t.Errorf("ContentLength %d for a %d-byte body", resp.ContentLength, len(tc.body))
			}
			if *hits != 1 {
				t.Errorf("%d upstream requests, want 1", *hits)
			}
			for _, st := range p.Stats() {
				if st.Failures != 0 {
					t.Errorf("%s blamed: %d failures", st.Name, st.Failures)
				}
			}
		})
	}
}

// A classifier sees the whole 2xx body, and a 2xx answer it retried
// reaches the caller whole when no other attempt can be made.
func TestClassifierSeesTheWholeBody(t *testing.T) {
	const body = "\n{\"id\":\"x\",\"answer\":42}"
	srv, _ := fixedAnswer(t, 200, "application/json", body)
	var seen []string
	var mu sync.Mutex
	tr, _, _ := newTestTransport(t, keysOf("sk-a"), srv.Client().Transport, nil,
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
	tr2, _, _ := newTestTransport(t, keysOf("sk-a"), srv.Client().Transport, []Option{WithMaxWait(time.Second)},
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

// Read after Close is an error, and Close may race with Read.
func TestBodyReadAfterAndDuringClose(t *testing.T) {
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; ; i++ {
			_, err := io.WriteString(w, "data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n")
			if err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-stop:
				return
			case <-r.Context().Done():
				return
			case <-time.After(time.Millisecond):
			}
		}
	}))
	defer srv.Close()
	defer close(stop)
	tr, p, _ := newTestTransport(t, []Key{{Secret: "sk-a", TPM: 100000}}, srv.Client().Transport, nil)

	resp, err := post(t, tr, srv.URL, `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	bufio.NewReader(resp.Body).ReadString('\n')
	resp.Body.Close()
	if n, err := resp.Body.Read(make([]byte, 10)); err == nil || n != 0 {
		t.Errorf("Read after Close = %d, %v; want 0 and an error", n, err)
	}

	for range 20 {
		resp, err := post(t, tr, srv.URL, `{"model":"m","stream":true}`)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 7)
			for {
				if _, err := resp.Body.Read(buf); err != nil {
					return
				}
			}
		}()
		time.Sleep(time.Millisecond)
		resp.Body.Close()
		wg.Wait()
	}
	if st := p.Stats()[0]; st.InFlight != 0 {
		t.Errorf("%d in flight after every body was closed", st.InFlight)
	}
}
