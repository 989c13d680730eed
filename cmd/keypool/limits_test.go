package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/fakeupstream"
)

// shortTimeouts makes the connection limits short enough to test.
func shortTimeouts(c *config) {
	c.headerTimeout, c.bodyTimeout, c.idleTimeout = 200*time.Millisecond, 300*time.Millisecond, 300*time.Millisecond
}

func TestBodyLimit(t *testing.T) {
	sim := startSim(t, fakeupstream.Config{Keys: simKeys(keyA)})
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keyA, "KEYPOOL_UPSTREAM": sim.URL, "KEYPOOL_TOKENS": token,
		"KEYPOOL_MAX_BODY_BYTES": "1000"})
	big := `{"model":"deepseek-chat","messages":[{"role":"user","content":"` + strings.Repeat("x", 1000) + `"}]}`

	// Announced too large: refused before it is read.
	status, body := p.chat(t, big)
	if status != 413 || apiErrorOf(t, body).Code != "request_too_large" {
		t.Errorf("Content-Length over the limit: %d %s", status, body)
	}
	// Chunked, so the size shows only while reading.
	req, _ := http.NewRequest("POST", p.URL+"/v1/chat/completions", io.MultiReader(strings.NewReader(big)))
	req.Header.Set("Authorization", "Bearer "+token)
	req.ContentLength = -1
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 || apiErrorOf(t, string(b)).Code != "request_too_large" {
		t.Errorf("chunked body over the limit: %d %s", resp.StatusCode, b)
	}
	if n := sim.Total().Requests; n != 0 {
		t.Errorf("the upstream saw %d requests", n)
	}
	if status, body := p.chat(t, chatBody); status != 200 {
		t.Errorf("a small body: %d %s", status, body)
	}
}

// closedWithin reports whether the server closes conn, without answering
// 200, within limit.
func closedWithin(t *testing.T, conn net.Conn, limit time.Duration) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(limit))
	answer, err := io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open after %v", limit)
	}
	return string(answer)
}

// idleIsClosed sends one request on c, then checks that the proxy closes
// it when it stays idle.
func idleIsClosed(t *testing.T, c net.Conn) {
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.ReadByte(); err != io.EOF {
		t.Errorf("idle connection: %v, want it closed", err)
	}
}

func TestSlowClientsAreCut(t *testing.T) {
	sim := startSim(t, fakeupstream.Config{Keys: simKeys(keyA)})
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keyA, "KEYPOOL_UPSTREAM": sim.URL, "KEYPOOL_TOKENS": token}, shortTimeouts)
	addr := strings.TrimPrefix(p.URL, "http://")
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	t.Run("headers never finish", func(t *testing.T) {
		c := dial()
		fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n", token)
		closedWithin(t, c, 10*time.Second)
	})
	t.Run("body never finishes", func(t *testing.T) {
		c := dial()
		fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 500\r\n\r\n{\"model\":", token)
		answer := closedWithin(t, c, 10*time.Second)
		if !strings.HasPrefix(answer, "HTTP/1.1 408") {
			t.Errorf("answer %.200q, want 408", answer)
		}
	})
	t.Run("body never finishes, no token", func(t *testing.T) {
		c := dial()
		io.WriteString(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"model\":")
		closedWithin(t, c, 10*time.Second)
	})
	t.Run("idle connection", func(t *testing.T) { idleIsClosed(t, dial()) })
	t.Run("huge headers", func(t *testing.T) {
		c := dial()
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 2*maxHeaderBytes))
		if answer := closedWithin(t, c, 10*time.Second); !strings.HasPrefix(answer, "HTTP/1.1 431") {
			t.Errorf("answer %.100q, want 431", answer)
		}
	})
	if n := sim.Total().Requests; n != 0 {
		t.Errorf("slow clients reached the upstream %d times", n)
	}
	if n := p.inFlight(); n != 0 {
		t.Errorf("%d slots held", n)
	}
	// A body that arrives in time, then a long answer: the body's
	// deadline is gone once the body is read.
	status, body := p.chat(t, chatBody)
	if status != 200 {
		t.Errorf("status %d: %s", status, body)
	}
}

func TestStreamOutlivesBodyDeadline(t *testing.T) {
	sim := startSim(t, fakeupstream.Config{Keys: simKeys(keyA), StreamChunks: 6, ChunkEvery: 100 * time.Millisecond})
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keyA, "KEYPOOL_UPSTREAM": sim.URL, "KEYPOOL_TOKENS": token}, shortTimeouts)
	// 600ms of stream against a 300ms body deadline and 200ms header timeout.
	status, body := p.chat(t, streamBody)
	if status != 200 || !strings.Contains(body, "tok5") || !strings.Contains(body, "[DONE]") {
		t.Errorf("status %d, stream %q", status, body)
	}
}
