package fakeupstream

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"time"
)

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func completion(model string, prompt, completionTokens int) map[string]any {
	return map[string]any{
		"id":      "chatcmpl-sim",
		"object":  "chat.completion",
		"created": 1700000000,
		"model":   model,
		"choices": []map[string]any{{
			"index":         0,
			"message":       map[string]string{"role": "assistant", "content": "Hello from the simulator."},
			"finish_reason": "stop",
		}},
		"usage": usage{prompt, completionTokens, prompt + completionTokens},
	}
}

// stream answers as SSE: keep-alive comments while "queued", then
// content chunks, a final chunk with usage, and [DONE]. It calls release
// when the answer is complete and reports whether the stream was sent.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, key Key, model string, prompt, completionTokens int, release func()) bool {
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flush := func() {
		if flusher != nil {
			flusher.Flush()
		}
	}
	flush()
	s.mu.Lock()
	keepAlives, every := s.cfg.StreamKeepAlives, s.cfg.KeepAliveEvery
	chunks, chunkEvery := max(1, s.cfg.StreamChunks), s.cfg.ChunkEvery
	s.mu.Unlock()
	for range keepAlives {
		if !sleepCtx(r, every) {
			return false
		}
		io.WriteString(w, ": keep-alive\n\n")
		flush()
	}
	for queued := time.Duration(0); queued < key.QueueFor; queued += 20 * time.Millisecond {
		if !sleepCtx(r, 20*time.Millisecond) {
			return false
		}
		io.WriteString(w, ": keep-alive\n\n")
		flush()
	}
	for i := range chunks {
		if !sleepCtx(r, chunkEvery) {
			return false
		}
		if key.BreakAfterFrames > 0 && i == key.BreakAfterFrames {
			resetConnection(w)
			return false
		}
		frame := map[string]any{
			"id": "chatcmpl-sim", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
			"choices": []map[string]any{{"index": 0, "delta": map[string]string{"content": fmt.Sprintf("tok%d ", i)}}},
		}
		writeFrame(w, frame)
		flush()
	}
	release()
	writeFrame(w, map[string]any{
		"id": "chatcmpl-sim", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
		"choices": []map[string]any{{"index": 0, "delta": map[string]string{}, "finish_reason": "stop"}},
		"usage":   usage{prompt, completionTokens, prompt + completionTokens},
	})
	io.WriteString(w, "data: [DONE]\n\n")
	flush()
	return true
}

func writeFrame(w io.Writer, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(w, "data: %s\n\n", b)
}

func writeError(w http.ResponseWriter, status int, errType, code, message string, h http.Header) {
	for k, v := range h {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"message": message, "type": errType, "param": nil, "code": code,
	}})
}

// resetConnection closes the connection with a TCP RST before any answer.
func resetConnection(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

// sleepCtx sleeps d unless the request is cancelled first.
func sleepCtx(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return r.Context().Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

func quietLog() *log.Logger { return log.New(io.Discard, "", 0) }
