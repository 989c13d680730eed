package keypool

import (
	"strings"
	"testing"
)

// Anthropic's stream puts input tokens in message_start and output tokens
// in message_delta: both count.
func TestAnthropicStreamUsageIsSummed(t *testing.T) {
	stream := strings.Join([]string{
		"event: message_start",
		`data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}`,
		"",
		"event: content_block_start",
		`data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`,
		"",
		"event: ping",
		`data: {"type": "ping"}`,
		"",
		"event: content_block_delta",
		`data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}`,
		"",
		"event: content_block_stop",
		`data: {"type":"content_block_stop","index":0}`,
		"",
		"event: message_delta",
		`data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}`,
		"",
		"event: message_stop",
		`data: {"type":"message_stop"}`,
		"", "",
	}, "\n")
	srv, _ := fixedAnswer(t, 200, "text/event-stream", stream)
	tr, p, _ := newFakeClockTransport(t, []Key{{Secret: "sk-ant", TPM: 100000}}, srv.Client().Transport, nil, WithAuth(AuthXAPIKey))
	resp, err := post(t, tr, srv.URL, `{"model":"claude-sonnet-4-5","max_tokens":1000,"stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if got := p.Stats()[0].Tokens; got != 40 {
		t.Errorf("Stats().Tokens = %d, want 25 input + 15 output", got)
	}
}

func TestUsageScanner(t *testing.T) {
	tests := []struct {
		body  string
		total int
		found bool
	}{
		{`{"id":"x","usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}`, 21, true},
		{"data: {\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\ndata: [DONE]\n\n", 12, true},
		{`{"usage":{"input_tokens":3,"output_tokens":4}}`, 7, true},
		{`{"content":"the word \"usage\" here","usage" : {"total_tokens":5}}`, 5, true},
		{`{"usage":{"total_tokens":5,"note":"}{"}}`, 5, true},
		{`{"no":"usage"}`, 0, false},
		{`{"usage":{"total_tokens":` + strings.Repeat("1", 600) + `}}`, 0, false},
	}
	for _, tt := range tests {
		// Fed in pieces of every size, the answer is the same.
		for _, step := range []int{1, 3, 7, len(tt.body)} {
			var s usageScanner
			for i := 0; i < len(tt.body); i += step {
				s.feed([]byte(tt.body[i:min(i+step, len(tt.body))]))
			}
			if s.found != tt.found || s.tokens() != tt.total {
				t.Errorf("step %d, %s: found %v total %d; want %v %d", step, tt.body, s.found, s.tokens(), tt.found, tt.total)
			}
		}
	}
}

func FuzzUsageScanner(f *testing.F) {
	f.Add([]byte(`{"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}`), 3)
	f.Add([]byte("data: {\"usage\":null}\n\ndata: {\"usage\":{\"total_tokens\":2}}\n\n"), 1)
	f.Fuzz(func(t *testing.T, body []byte, step int) {
		step = max(1, step%64)
		var whole, pieces usageScanner
		whole.feed(body)
		for i := 0; i < len(body); i += step {
			pieces.feed(body[i:min(i+step, len(body))])
		}
		if whole.found != pieces.found || whole.tokens() != pieces.tokens() {
			t.Fatalf("whole %v/%d, in pieces of %d %v/%d", whole.found, whole.tokens(), step, pieces.found, pieces.tokens())
		}
	})
}
