package fakeupstream

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// sse writes a stream of server-sent events; its writers leave the
// flushing to their callers, but for keepAlive.
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

// event writes v as a data line of the named event, unflushed.
func (e *sse) event(name string, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(e.w, "event: %s\ndata: %s\n\n", name, b)
}

// stream answers as SSE, in the call's protocol: keep-alive comments
// while "queued", then the protocol's head events, the content chunks
// and its tail events. It calls complete when the answer is complete,
// before the tail.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, key Key, c *call, complete func()) {
	s.mu.Lock()
	keepAlives, every := s.cfg.StreamKeepAlives, s.cfg.KeepAliveEvery
	chunks, chunkEvery := max(1, s.cfg.StreamChunks), s.cfg.ChunkEvery
	s.mu.Unlock()
	e := startSSE(w, r)
	if !e.queue(keepAlives, every, key.QueueFor) {
		return
	}
	c.proto.streamHead(e, c)
	e.flush()
	for i := range chunks {
		if !sleepCtx(r, chunkEvery) {
			return
		}
		if key.BreakAfterFrames > 0 && i == key.BreakAfterFrames {
			resetConnection(w)
			return
		}
		c.proto.streamChunk(e, c, i)
		e.flush()
	}
	complete()
	c.proto.streamTail(e, c)
	e.flush()
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
