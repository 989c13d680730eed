package fakeupstream_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/fakeupstream"
)

// openAIError is the body of an OpenAI-style error.
type openAIError struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    string `json:"code"`
	} `json:"error"`
}

func decodeOpenAIError(t *testing.T, body string) openAIError {
	t.Helper()
	var e openAIError
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Message == "" {
		t.Fatalf("not an OpenAI error body (%v): %q", err, body)
	}
	return e
}

func TestKeyFaults(t *testing.T) {
	cases := []struct {
		fault      fakeupstream.Fault
		status     int
		code       string
		retryAfter string
		counted    func(fakeupstream.Counters) int
	}{
		{fakeupstream.FaultRevoked, 401, "invalid_api_key", "", func(c fakeupstream.Counters) int { return c.Unauthorized }},
		{fakeupstream.FaultForbidden, 403, "forbidden", "", func(c fakeupstream.Counters) int { return c.Unauthorized }},
		{fakeupstream.FaultNoBalance, 402, "invalid_request_error", "", func(c fakeupstream.Counters) int { return c.NoBalance }},
		{fakeupstream.FaultQuota, 429, "insufficient_quota", "", func(c fakeupstream.Counters) int { return c.QuotaErrors }},
		{fakeupstream.FaultRateLimited, 429, "rate_limit_exceeded", "1", func(c fakeupstream.Counters) int { return c.RateLimited }},
		{fakeupstream.FaultServerError, 500, "internal_error", "", func(c fakeupstream.Counters) int { return c.ServerErrors }},
	}
	for _, tc := range cases {
		s := start(t, fakeupstream.Config{Keys: map[string]fakeupstream.Key{"sk-k": {Fault: tc.fault}}})
		a := chat(t, s, "sk-k", chatBody)
		if a.err != nil || a.status != tc.status {
			t.Fatalf("fault %d: status %d, error %v", tc.fault, a.status, a.err)
		}
		if e := decodeOpenAIError(t, a.body); e.Error.Code != tc.code {
			t.Errorf("fault %d: code %q, want %q", tc.fault, e.Error.Code, tc.code)
		}
		if got := a.header.Get("Retry-After"); got != tc.retryAfter {
			t.Errorf("fault %d: Retry-After %q, want %q", tc.fault, got, tc.retryAfter)
		}
		c := s.Counters("sk-k")
		if c.Requests != 1 || tc.counted(c) != 1 || c.OK != 0 {
			t.Errorf("fault %d: counters %+v", tc.fault, c)
		}
	}
}

func TestUnknownKeyIsUnauthorized(t *testing.T) {
	s := start(t, fakeupstream.Config{Keys: keys("sk-a")})
	if a := chat(t, s, "sk-nobody", chatBody); a.status != 401 {
		t.Fatalf("status %d", a.status)
	}
	if c := s.Counters("sk-nobody"); c.Requests != 1 || c.Unauthorized != 1 {
		t.Errorf("counters %+v", c)
	}
}

func TestGarbageAndBrokenAnswers(t *testing.T) {
	s := start(t, fakeupstream.Config{Keys: map[string]fakeupstream.Key{
		"sk-garbage": {Fault: fakeupstream.FaultGarbage},
		"sk-broken":  {Fault: fakeupstream.FaultResetAfterHeaders},
	}})
	if a := chat(t, s, "sk-garbage", chatBody); a.status != 502 || len(a.body) != 256<<10 {
		t.Errorf("garbage: status %d, %d bytes", a.status, len(a.body))
	}
	if a := chat(t, s, "sk-broken", chatBody); a.err == nil {
		t.Errorf("broken answer read whole: %d %q", a.status, a.body)
	}
	if c := s.Counters("sk-garbage"); c.ServerErrors != 1 {
		t.Errorf("garbage counters %+v", c)
	}
	if c := s.Counters("sk-broken"); c.Resets != 1 {
		t.Errorf("broken counters %+v", c)
	}
}

func TestRandomFaultsAtRateOne(t *testing.T) {
	s := start(t, fakeupstream.Config{Keys: keys("sk-a"), ResetRate: 1})
	if a := chat(t, s, "sk-a", chatBody); a.err == nil {
		t.Errorf("reset rate 1: got status %d", a.status)
	}
	s = start(t, fakeupstream.Config{Keys: keys("sk-a"), ErrorRate: 1})
	if a := chat(t, s, "sk-a", chatBody); a.status != 500 {
		t.Errorf("error rate 1: got status %d", a.status)
	}
	if c := s.Counters("sk-a"); c.ServerErrors != 1 {
		t.Errorf("counters %+v", c)
	}
}

// The same seed gives the same answers, request after request.
func TestRandomFaultsFollowTheSeed(t *testing.T) {
	run := func() []int {
		s := start(t, fakeupstream.Config{Keys: keys("sk-a"), ErrorRate: 0.5, Seed: 7})
		var statuses []int
		for range 40 {
			statuses = append(statuses, chat(t, s, "sk-a", chatBody).status)
		}
		return statuses
	}
	first, second := run(), run()
	errors := 0
	for i := range first {
		if first[i] != second[i] {
			t.Fatalf("request %d: %d then %d", i, first[i], second[i])
		}
		if first[i] == 500 {
			errors++
		}
	}
	if errors == 0 || errors == len(first) {
		t.Errorf("%d of %d requests failed at rate 0.5", errors, len(first))
	}
}

func TestOutageWindow(t *testing.T) {
	inVirtualTime(t, func(t *testing.T) {
		s := fakeupstream.NewInMemory(fakeupstream.Config{
			Keys: map[string]fakeupstream.Key{"sk-a": {Account: "a"}, "sk-b": {Account: "b"}, "sk-c": {}},
			Outages: []fakeupstream.Outage{
				{Account: "a", Start: time.Second, End: 2 * time.Second, Status: http.StatusServiceUnavailable},
				{Account: "b", Start: time.Second, End: 2 * time.Second},
			},
		})
		defer s.Close()
		expect := func(when string, a, b, c int) {
			t.Helper()
			got := [3]int{chat(t, s, "sk-a", chatBody).status, chat(t, s, "sk-b", chatBody).status, chat(t, s, "sk-c", chatBody).status}
			if got != [3]int{a, b, c} {
				t.Errorf("%s: statuses %v, want %v", when, got, [3]int{a, b, c})
			}
		}
		expect("before", 200, 200, 200)
		time.Sleep(1500 * time.Millisecond)
		expect("during", 503, 0, 200) // 0: the connection was reset
		time.Sleep(time.Second)
		expect("after", 200, 200, 200)
		if a, b := s.Counters("sk-a"), s.Counters("sk-b"); a.ServerErrors != 1 || b.Resets != 1 {
			t.Errorf("counters a %+v, b %+v", a, b)
		}
	})
}

func TestRandomRateLimitsAreBare429s(t *testing.T) {
	s := start(t, fakeupstream.Config{
		Mode:          fakeupstream.OpenAI,
		Accounts:      map[string]fakeupstream.Account{"sk-a": {RPM: 1000, TPM: 1 << 20}},
		Keys:          map[string]fakeupstream.Key{"sk-a": {}, "sk-revoked": {Fault: fakeupstream.FaultRevoked}},
		RateLimitRate: 1,
	})
	a := chat(t, s, "sk-a", chatBody)
	if a.status != 429 {
		t.Fatalf("status %d", a.status)
	}
	for k := range a.header {
		if k == "Retry-After" || k == "Retry-After-Ms" || len(k) > 12 && k[:12] == "X-Ratelimit-" {
			t.Errorf("random 429 carries %s", k)
		}
	}
	if e := decodeOpenAIError(t, a.body); e.Error.Code != "rate_limit_reached" || e.Error.Type != "rate_limit_reached_error" {
		t.Errorf("random 429 body %s", a.body)
	}
	if c := s.Counters("sk-a"); c.RateLimited != 1 || c.RandomRateLimited != 1 {
		t.Errorf("counters %+v", c)
	}
	if a := chat(t, s, "sk-revoked", chatBody); a.status != 401 {
		t.Errorf("a revoked key got %d, not its 401", a.status)
	}
}

func TestRandomRateLimitsStrikeAShare(t *testing.T) {
	s := start(t, fakeupstream.Config{Keys: keys("sk-a"), RateLimitRate: 0.3, Seed: 1})
	limited := 0
	const n = 200
	for range n {
		switch a := chat(t, s, "sk-a", chatBody); a.status {
		case 429:
			limited++
		case 200:
		default:
			t.Fatalf("status %d", a.status)
		}
	}
	c := s.Counters("sk-a")
	if limited < n/10 || limited > n/2 || c.RandomRateLimited != limited || c.RateLimited != limited || c.OK != n-limited {
		t.Errorf("%d of %d limited at rate 0.3; counters %+v", limited, n, c)
	}
}

func TestOutagesComeBeforeRandomRateLimits(t *testing.T) {
	s := start(t, fakeupstream.Config{
		Keys:          keys("sk-a"),
		Outages:       []fakeupstream.Outage{{Account: "sk-a", End: time.Hour, Status: 503}},
		RateLimitRate: 1,
	})
	if a := chat(t, s, "sk-a", chatBody); a.status != 503 {
		t.Errorf("status %d", a.status)
	}
}

func TestProviderWideOutage(t *testing.T) {
	cases := []struct {
		status     int
		retryAfter time.Duration
		want       string
	}{
		{429, 30 * time.Second, "30"},
		{429, 1500 * time.Millisecond, "2"},
		{429, 0, ""},
		{503, 10 * time.Second, "10"},
	}
	for _, tc := range cases {
		s := start(t, fakeupstream.Config{
			Keys: map[string]fakeupstream.Key{
				"sk-a": {}, "sk-b": {Account: "shared"}, "sk-revoked": {Fault: fakeupstream.FaultRevoked},
			},
			Outages: []fakeupstream.Outage{{End: time.Hour, Status: tc.status, RetryAfter: tc.retryAfter}},
		})
		for _, secret := range []string{"sk-a", "sk-b"} {
			a := chat(t, s, secret, chatBody)
			if a.status != tc.status || a.header.Get("Retry-After") != tc.want {
				t.Errorf("outage %d/%v, %s: status %d, Retry-After %q", tc.status, tc.retryAfter, secret, a.status, a.header.Get("Retry-After"))
			}
			decodeOpenAIError(t, a.body)
		}
		if a := chat(t, s, "sk-revoked", chatBody); a.status != 401 {
			t.Errorf("revoked key during an outage: %d", a.status)
		}
		total := s.Total()
		if limited := total.RateLimited; (tc.status == 429) != (limited == 2) || total.ServerErrors+limited != 2 {
			t.Errorf("outage %d: counters %+v", tc.status, total)
		}
	}
}

func TestOverloadedOnChatCompletions(t *testing.T) {
	s := start(t, fakeupstream.Config{Keys: keys("sk-a"), OverloadedRate: 1})
	a := chat(t, s, "sk-a", chatBody)
	if e := decodeOpenAIError(t, a.body); a.status != fakeupstream.StatusOverloaded || e.Error.Type != "overloaded_error" {
		t.Errorf("status %d, body %s", a.status, a.body)
	}
	if c := s.Counters("sk-a"); c.Overloaded != 1 || c.ServerErrors != 1 {
		t.Errorf("counters %+v", c)
	}
}
