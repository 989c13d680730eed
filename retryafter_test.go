package keypool

import (
	"net/http"
	"testing"
	"time"
)

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
