package keypool

import "testing"

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
