package fakeupstream

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// sse writes a stream of server-sent events, flushing each.
type sse struct {
	w       http.ResponseWriter
	r       *http.Request
	flusher http.Flusher
}

// startSSE sends a stream's 200 and headers.
func startSSE(w http.ResponseWriter, r *http.Request) *sse {
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	e := &sse{w: w, r: r, flusher: flusher}
	e.flush()
	return e
}

func (e *sse) flush() {
	if e.flusher != nil {
		e.flusher.Flush()
	}
}

// keepAlive sends a comment line after d, or reports that the request
// was cancelled.
func (e *sse) keepAlive(d time.Duration) bool {
	if !sleepCtx(e.r, d) {
		return false
	}
	io.WriteString(e.w, ": keep-alive\n\n")
	e.flush()
	return true
}

// data writes v as a data line, unflushed.
func (e *sse) data(v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(e.w, "data: %s\n\n", b)
}

// stream answers as SSE: keep-alive comments while "queued", then
// content chunks, a final chunk with usage, and [DONE]. It calls release
// when the answer is complete and reports whether the stream was sent.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, key Key, c *call, release func()) bool {
	s.mu.Lock()
	keepAlives, every := s.cfg.StreamKeepAlives, s.cfg.KeepAliveEvery
	chunks, chunkEvery := max(1, s.cfg.StreamChunks), s.cfg.ChunkEvery
	s.mu.Unlock()
	e := startSSE(w, r)
	if !e.queue(keepAlives, every, key.QueueFor) {
		return false
	}
	for i := range chunks {
		if !sleepCtx(r, chunkEvery) {
			return false
		}
		if key.BreakAfterFrames > 0 && i == key.BreakAfterFrames {
			resetConnection(w)
			return false
		}
		e.data(chatChunk(c.model, map[string]string{"content": fmt.Sprintf("tok%d ", i)}, nil))
		e.flush()
	}
	release()
	last := chatChunk(c.model, map[string]string{}, "stop")
	last["usage"] = usage{c.prompt, c.completion, c.prompt + c.completion}
	e.data(last)
	io.WriteString(w, "data: [DONE]\n\n")
	e.flush()
	return true
}

// queue sends the keep-alive comments a stream starts with: n of them,
// every apart, then one every 20ms for queueFor, as DeepSeek does while
// a request waits in its queue.
func (e *sse) queue(n int, every, queueFor time.Duration) bool {
	for range n {
		if !e.keepAlive(every) {
			return false
		}
	}
	for queued := time.Duration(0); queued < queueFor; queued += 20 * time.Millisecond {
		if !e.keepAlive(20 * time.Millisecond) {
			return false
		}
	}
	return true
}

// chatChunk is one chunk of a chat completion stream.
func chatChunk(model string, delta map[string]string, finish any) map[string]any {
	choice := map[string]any{"index": 0, "delta": delta}
	if finish != nil {
		choice["finish_reason"] = finish
	}
	return map[string]any{
		"id": "chatcmpl-sim", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
		"choices": []map[string]any{choice},
	}
}
