package keypool

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"syscall"
	"testing"
	"time"
)

func TestClientErrorsAreReturnedUntouched(t *testing.T) {
	for _, code := range []int{400, 404, 422} {
		s := &scripted{script: map[string][]func(http.ResponseWriter){
			"sk-a": {status(code, `{"error":{"message":"bad request","code":"invalid"}}`)},
		}}
		upstream := httptest.NewServer(s)
		tr, p, _ := newFakeClockTransport(t, keysOf("sk-a", "sk-b"), upstream.Client().Transport, nil, WithMaxAttempts(3))
		p.Disable(p.Stats()[1].Name)
		resp, err := post(t, tr, upstream.URL, chatBody)
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(t, resp); resp.StatusCode != code || body != `{"error":{"message":"bad request","code":"invalid"}}` {
			t.Errorf("%d: got %d %q", code, resp.StatusCode, body)
		}
		if len(s.seen) != 1 {
			t.Errorf("%d: %d attempts, want 1", code, len(s.seen))
		}
		upstream.Close()
	}
}

func TestShouldRetryHeaderWins(t *testing.T) {
	s := &scripted{script: map[string][]func(http.ResponseWriter){
		"sk-a": {status(500, `{}`, "X-Should-Retry", "false"), status(400, `{}`, "X-Should-Retry", "true")},
	}}
	upstream := httptest.NewServer(s)
	defer upstream.Close()
	tr, _, _ := newFakeClockTransport(t, keysOf("sk-a"), upstream.Client().Transport, nil)
	resp, _ := post(t, tr, upstream.URL, chatBody)
	readAll(t, resp)
	if resp.StatusCode != 500 || len(s.seen) != 1 {
		t.Errorf("x-should-retry false: status %d after %d attempts", resp.StatusCode, len(s.seen))
	}
	resp, _ = post(t, tr, upstream.URL, chatBody)
	readAll(t, resp)
	if resp.StatusCode != 200 || len(s.seen) != 3 {
		t.Errorf("x-should-retry true: status %d after %d attempts", resp.StatusCode, len(s.seen)-1)
	}
}

func TestClassify(t *testing.T) {
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i+1 < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	resp := func(code int, header http.Header) *http.Response {
		if header == nil {
			header = http.Header{}
		}
		return &http.Response{StatusCode: code, Header: header}
	}
	dialErr := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	resetErr := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	tests := []struct {
		name string
		resp *http.Response
		body string
		err  error
		want Outcome
	}{
		{"200", resp(200, nil), "", nil, Outcome{EffectOK, RetryNo, 0}},
		{"400", resp(400, nil), `{"error":{"message":"bad"}}`, nil, Outcome{EffectOK, RetryNo, 0}},
		{"404", resp(404, nil), "", nil, Outcome{EffectOK, RetryNo, 0}},
		{"422", resp(422, nil), "", nil, Outcome{EffectOK, RetryNo, 0}},
		{"401", resp(401, nil), "", nil, Outcome{EffectKeyRevoked, RetryNow, 0}},
		{"403", resp(403, nil), "", nil, Outcome{EffectKeyRevoked, RetryNow, 0}},
		{"402", resp(402, nil), "", nil, Outcome{EffectAccountExhausted, RetryNow, 0}},
		{"429 quota", resp(429, nil), `{"error":{"type":"insufficient_quota","code":"insufficient_quota"}}`, nil, Outcome{EffectAccountExhausted, RetryNow, 0}},
		{"429 quota message", resp(429, nil), `{"error":{"message":"You exceeded your current quota, please check your plan"}}`, nil, Outcome{EffectAccountExhausted, RetryNow, 0}},
		{"429 rate", resp(429, h("Retry-After", "3")), `{"error":{"code":"rate_limit_exceeded"}}`, nil, Outcome{EffectRateLimited, RetryNow, 3 * time.Second}},
		{"429 gemini quota wording", resp(429, nil), `[{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}]`, nil, Outcome{EffectRateLimited, RetryNow, 0}},
		{"408", resp(408, nil), "", nil, Outcome{EffectFailure, RetryBackoff, 0}},
		{"409", resp(409, nil), "", nil, Outcome{EffectFailure, RetryBackoff, 0}},
		{"500", resp(500, nil), "", nil, Outcome{EffectFailure, RetryBackoff, 0}},
		{"529", resp(529, nil), "", nil, Outcome{EffectFailure, RetryBackoff, 0}},
		{"500 should-retry false", resp(500, h("X-Should-Retry", "false")), "", nil, Outcome{EffectFailure, RetryNo, 0}},
		{"400 should-retry true", resp(400, h("X-Should-Retry", "true")), "", nil, Outcome{EffectOK, RetryBackoff, 0}},
		{"200 should-retry true", resp(200, h("X-Should-Retry", "true")), "", nil, Outcome{EffectOK, RetryNo, 0}},
		{"dial refused", nil, "", &url.Error{Op: "Post", URL: "http://x", Err: dialErr}, Outcome{EffectFailure, RetryNow, 0}},
		{"dns", nil, "", &net.DNSError{Err: "no such host", Name: "x"}, Outcome{EffectFailure, RetryNow, 0}},
		{"reset", nil, "", resetErr, Outcome{EffectFailure, RetryNow, 0}},
		{"eof", nil, "", io.ErrUnexpectedEOF, Outcome{EffectFailure, RetryNow, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify(tt.resp, tt.err, []byte(tt.body), true, newFakeClock()); got != tt.want {
				t.Errorf("classify = %+v, want %+v", got, tt.want)
			}
		})
	}
	// With retries after a write forbidden, only nothing-sent errors retry.
	if got := classify(nil, resetErr, nil, false, newFakeClock()); got.Retry != RetryNo {
		t.Errorf("reset with retryOnReset=false: %+v", got)
	}
	if got := classify(nil, dialErr, nil, false, newFakeClock()); got.Retry != RetryNow {
		t.Errorf("dial error with retryOnReset=false: %+v", got)
	}
	if nothingSent(context.Canceled) || nothingSent(errors.New("x")) {
		t.Error("nothingSent says yes to errors that say nothing")
	}
}
