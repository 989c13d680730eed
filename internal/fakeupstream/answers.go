package fakeupstream

import (
	"io"
	"log"
	"net"
	"net/http"
	"time"
)

// refuse writes the answer of a request that was not admitted and
// reports whether it did; it writes nothing for an admitted one.
func refuse(w http.ResponseWriter, c *call, d decision) bool {
	switch d.kind {
	case answerReset:
		resetConnection(w)
	case answerResetAfterHeaders:
		writeCutShort(w)
	case answerGarbage:
		w.WriteHeader(http.StatusBadGateway)
		w.Write(d.garbage)
	case answerError:
		c.proto.writeError(w, d.err, d.header)
	default:
		return false
	}
	return true
}

// answer writes an admitted request's answer, after its latency, and
// counts it once it is complete: before its last bytes go out, so that a
// client that has read the whole answer finds it counted.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, c *call, d decision, release func()) {
	copyHeader(w.Header(), d.header)
	if d.key.Fault == FaultSlowHeaders && !sleepCtx(r, 300*time.Millisecond) {
		return
	}
	complete := func() {
		release()
		s.countOK(c)
	}
	switch {
	case c.stream:
		s.stream(w, r, d.key, c, complete)
	case d.key.EmptyAnswers:
		sleepCtx(r, d.latency)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, "\n\n   \n")
	default:
		writeCompletion(w, r, c, d.latency, complete)
	}
}

// countOK counts a request answered in full and the tokens it was billed.
func (s *Server) countOK(c *call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cnt := s.countsLocked(c.secret)
	cnt.OK++
	cnt.PromptTokens += c.prompt
	cnt.CompletionTokens += c.completion
}

// writeCompletion writes a whole answer after the latency, calling
// complete before it writes.
func writeCompletion(w http.ResponseWriter, r *http.Request, c *call, latency time.Duration, complete func()) {
	if !sleepCtx(r, latency) {
		return
	}
	// The answer is complete: the provider frees the slot before the
	// last bytes reach the client.
	complete()
	c.proto.writeAnswer(w, c)
}

// answerText is the text of every non-streamed answer.
const answerText = "Hello from the simulator."

// writeCutShort sends a 200's headers and the first bytes of a body,
// then resets the connection.
func writeCutShort(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, `{"id":`)
	w.(http.Flusher).Flush()
	resetConnection(w)
}

// copyHeader sets every header of src in dst.
func copyHeader(dst, src http.Header) {
	for k, v := range src {
		dst[k] = v
	}
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
