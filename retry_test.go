package keypool

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"testing"
	"time"
)

// testNow is the fake clock's starting time.
var testNow = newFakeClock().Now()

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

func TestParseRetryAfter(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true},
		{"7", 7 * time.Second, true},
		{" 12 ", 12 * time.Second, true},
		{"1.5", 1500 * time.Millisecond, true},
		{testNow.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second, true},
		{testNow.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"Fri, 02 Jan 2026 03:05:05 GMT", time.Minute, true},
		{"99999999999999999999", maxHeaderWait, true},
		{"-1", 0, false},
		{"NaN", 0, false},
		{"soon", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseRetryAfter(tt.in, testNow)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseRetryAfterMs(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1500", 1500 * time.Millisecond, true},
		{"20.5", 20500 * time.Microsecond, true},
		{"0", 0, true},
		{"-3", 0, false},
		{"Inf", maxHeaderWait, true},
		{"x", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseRetryAfterMs(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseRetryAfterMs(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseResetValue(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1s", time.Second, true},
		{"6m0s", 6 * time.Minute, true},
		{"20ms", 20 * time.Millisecond, true},
		{"1m30.5s", 90500 * time.Millisecond, true},
		{"2.5", 2500 * time.Millisecond, true},
		{"1767323075", 30 * time.Second, true},    // Unix seconds (testNow + 30s)
		{"1767323075000", 30 * time.Second, true}, // Unix milliseconds
		{"2026-01-02T03:04:15Z", 10 * time.Second, true},
		{"-1s", 0, false},
		{"later", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseResetValue(tt.in, testNow)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseResetValue(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestRateLimitReset(t *testing.T) {
	h := http.Header{}
	h.Set("X-Ratelimit-Reset-Requests", "10s")
	h.Set("X-Ratelimit-Reset-Tokens", "3s")
	if d, ok := rateLimitReset(h, testNow); !ok || d != 3*time.Second {
		t.Errorf("none exhausted: %v %v, want the soonest, 3s", d, ok)
	}
	h.Set("X-Ratelimit-Remaining-Requests", "0")
	if d, ok := rateLimitReset(h, testNow); !ok || d != 10*time.Second {
		t.Errorf("requests exhausted: %v %v, want 10s", d, ok)
	}
	if _, ok := rateLimitReset(http.Header{}, testNow); ok {
		t.Error("no headers, yet a reset")
	}
}

func TestParseErrorBody(t *testing.T) {
	tests := []struct {
		body  string
		want  apiError
		quota bool
	}{
		{`{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}`,
			apiError{"insufficient_quota", "insufficient_quota", "You exceeded your current quota"}, true},
		{`{"error":{"message":"Insufficient Balance","type":"unknown_error","code":"invalid_request_error"}}`,
			apiError{"invalid_request_error", "unknown_error", "Insufficient Balance"}, true},
		{`{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation have exceeded call rate limit"}}`,
			apiError{"429", "", "Requests to the ChatCompletions_Create Operation have exceeded call rate limit"}, false},
		{`{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}`,
			apiError{"", "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"}, false},
		{`[{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}]`,
			apiError{"429", "", "Resource has been exhausted (e.g. check quota)."}, false},
		{`{"error":{"message":"Insufficient credits","code":402}}`, apiError{"402", "", "Insufficient credits"}, true},
		{`{"error":"quota gone: insufficient_quota"}`, apiError{"", "", "quota gone: insufficient_quota"}, true},
		{`{"error":{"message":"trunc`, apiError{}, false},
		{`<html>502 Bad Gateway</html>`, apiError{}, false},
		{``, apiError{}, false},
	}
	for _, tt := range tests {
		got := parseErrorBody([]byte(tt.body))
		if got != tt.want || got.quotaExhausted() != tt.quota {
			t.Errorf("parseErrorBody(%s) = %+v (quota %v), want %+v (quota %v)", tt.body, got, got.quotaExhausted(), tt.want, tt.quota)
		}
	}
}

func TestParseRequestMeta(t *testing.T) {
	tests := []struct {
		body  string
		model string
		extra int // tokens beyond len(body)/4
	}{
		{`{"model":"gpt-4o","max_tokens":100}`, "gpt-4o", 100},
		{`{"model":"o3","max_completion_tokens":50,"max_tokens":9}`, "o3", 50},
		{`{"model":"deepseek-chat"}`, "deepseek-chat", defaultCompletionTokens},
		{`{"model":"x","max_tokens":-4}`, "x", defaultCompletionTokens},
	}
	for _, tt := range tests {
		m := parseRequestMeta([]byte(tt.body))
		if m.Model != tt.model || m.Tokens != len(tt.body)/4+tt.extra {
			t.Errorf("parseRequestMeta(%s) = %+v, want model %q and %d tokens", tt.body, m, tt.model, len(tt.body)/4+tt.extra)
		}
	}
	// Not a model request: no model, no tokens.
	for _, body := range []string{`not json`, `{"purpose":"fine-tune"}`, `{"model":42}`, ``} {
		if m := parseRequestMeta([]byte(body)); m != (requestMeta{}) {
			t.Errorf("parseRequestMeta(%s) = %+v, want nothing", body, m)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "7", "1.5", "-1", "Fri, 02 Jan 2026 03:05:05 GMT", "Friday, 02-Jan-26 03:05:05 GMT", "1e400", "NaN"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := parseRetryAfter(v, testNow)
		if d < 0 || d > maxHeaderWait || (!ok && d != 0) {
			t.Fatalf("parseRetryAfter(%q) = %v, %v", v, d, ok)
		}
		d, ok = parseRetryAfterMs(v)
		if d < 0 || d > maxHeaderWait || (!ok && d != 0) {
			t.Fatalf("parseRetryAfterMs(%q) = %v, %v", v, d, ok)
		}
	})
}

func FuzzParseResetValue(f *testing.F) {
	for _, s := range []string{"1s", "6m0s", "20ms", "2.5", "1767323075", "1767323075000", "2026-01-02T03:04:15Z", "-1s", "9999999h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := parseResetValue(v, testNow)
		if d < 0 || d > maxHeaderWait || (!ok && d != 0) {
			t.Fatalf("parseResetValue(%q) = %v, %v", v, d, ok)
		}
		h := http.Header{}
		h.Set("X-Ratelimit-Reset-Tokens", v)
		h.Set("X-Ratelimit-Remaining-Tokens", "0")
		if d, _ := retryAfter(h, testNow); d < 0 || d > maxHeaderWait {
			t.Fatalf("retryAfter with reset %q = %v", v, d)
		}
	})
}

func FuzzParseErrorBody(f *testing.F) {
	for _, s := range []string{
		`{"error":{"type":"insufficient_quota","code":"insufficient_quota"}}`,
		`{"type":"error","error":{"type":"rate_limit_error","message":"x"}}`,
		`[{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}]`,
		`{"error":"text"}`, `[]`, `[1]`, `{"error":[1,2]}`, `{"code":1e308}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		e := parseErrorBody(body)
		_ = e.quotaExhausted()
	})
}

func FuzzParseRequestMeta(f *testing.F) {
	for _, s := range []string{`{"model":"gpt-4o","max_tokens":100}`, `{"model":"o3","max_completion_tokens":99999999999}`, `{"max_tokens":-1}`, `{`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m := parseRequestMeta(body)
		if m.Tokens < 0 {
			t.Fatalf("negative estimate %d for %q", m.Tokens, body)
		}
	})
}
