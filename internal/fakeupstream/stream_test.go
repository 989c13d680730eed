package fakeupstream_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/fakeupstream"
)

// sseLines splits a stream into its non-empty lines.
func sseLines(body string) []string {
	var lines []string
	for _, l := range strings.Split(body, "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

const streamBody = `{"model":"deepseek-chat","stream":true,"messages":[{"role":"user","content":"hi"}]}`

// checkChatChunks checks that lines are the content chunks of a chat
// stream, "tok0 " first.
func checkChatChunks(t *testing.T, lines []string) {
	t.Helper()
	for i, l := range lines {
		var chunk struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta struct{ Content string } `json:"delta"`
			} `json:"choices"`
		}
		err := json.Unmarshal([]byte(strings.TrimPrefix(l, "data: ")), &chunk)
		if err != nil || chunk.Object != "chat.completion.chunk" || len(chunk.Choices) != 1 || chunk.Choices[0].Delta.Content != fmt.Sprintf("tok%d ", i) {
			t.Errorf("chunk %d: %s (%v)", i, l, err)
		}
	}
}

func TestChatStream(t *testing.T) {
	inVirtualTime(t, func(t *testing.T) {
		s := fakeupstream.NewInMemory(fakeupstream.Config{
			Keys:             keys("sk-a"),
			StreamKeepAlives: 2, KeepAliveEvery: 10 * time.Millisecond,
			StreamChunks: 3, ChunkEvery: 5 * time.Millisecond,
		})
		defer s.Close()
		a := chat(t, s, "sk-a", streamBody)
		if a.status != 200 || a.header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("status %d, headers %v", a.status, a.header)
		}
		lines := sseLines(a.body)
		if len(lines) != 7 || lines[0] != ": keep-alive" || lines[1] != ": keep-alive" || lines[6] != "data: [DONE]" {
			t.Fatalf("stream:\n%s", a.body)
		}
		checkChatChunks(t, lines[2:5])
		var last struct {
			Choices []struct {
				FinishReason string `json:"finish_reason"`
			} `json:"choices"`
			Usage struct {
				Completion int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal([]byte(strings.TrimPrefix(lines[5], "data: ")), &last); err != nil ||
			last.Choices[0].FinishReason != "stop" || last.Usage.Completion != 16 {
			t.Errorf("last chunk %s (%v)", lines[5], err)
		}
		if c := s.Counters("sk-a"); c.OK != 1 || c.CompletionTokens != 16 {
			t.Errorf("counters %+v", c)
		}
	})
}

func TestStreamQueuesWithKeepAlives(t *testing.T) {
	inVirtualTime(t, func(t *testing.T) {
		s := fakeupstream.NewInMemory(fakeupstream.Config{
			Keys: map[string]fakeupstream.Key{"sk-a": {QueueFor: 100 * time.Millisecond}},
		})
		defer s.Close()
		lines := sseLines(chat(t, s, "sk-a", streamBody).body)
		keepAlives := 0
		for _, l := range lines {
			if l == ": keep-alive" {
				keepAlives++
			}
		}
		if keepAlives != 5 || !strings.HasPrefix(lines[5], "data: ") {
			t.Errorf("%d keep-alives in\n%s", keepAlives, strings.Join(lines, "\n"))
		}
	})
}

func TestStreamBreaksAfterFrames(t *testing.T) {
	s := start(t, fakeupstream.Config{
		Keys:         map[string]fakeupstream.Key{"sk-a": {BreakAfterFrames: 2}},
		StreamChunks: 5,
	})
	a := chat(t, s, "sk-a", streamBody)
	if a.err == nil || strings.Count(a.body, "data: ") != 2 {
		t.Errorf("error %v after\n%s", a.err, a.body)
	}
	if c := s.Counters("sk-a"); c.OK != 0 {
		t.Errorf("counters %+v", c)
	}
}
