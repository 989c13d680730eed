package fakeupstream_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/keypool/keypool/internal/fakeupstream"
)

const chatBody = `{"model":"deepseek-chat","messages":[{"role":"user","content":"hi"}]}`

// answer is what one request got back.
type answer struct {
	status int
	header http.Header
	body   string
	err    error // the request failed: no answer
}

// start starts an in-memory server and closes it when the test ends.
func start(t *testing.T, cfg fakeupstream.Config) *fakeupstream.Server {
	t.Helper()
	s := fakeupstream.NewInMemory(cfg)
	t.Cleanup(s.Close)
	return s
}

// send sends one request with the given headers and body ("" for none)
// and reads the whole answer.
func send(t *testing.T, s *fakeupstream.Server, method, path string, header map[string]string, body string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: string(b), err: err}
}

// chat posts body to the chat completions endpoint with secret as a
// bearer token.
func chat(t *testing.T, s *fakeupstream.Server, secret, body string) answer {
	t.Helper()
	return send(t, s, http.MethodPost, "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + secret}, body)
}

// keys makes a key map of the given secrets, each with no fault.
func keys(secrets ...string) map[string]fakeupstream.Key {
	m := map[string]fakeupstream.Key{}
	for _, s := range secrets {
		m[s] = fakeupstream.Key{}
	}
	return m
}
