package main

import (
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startStream opens a stream through the proxy and waits for its first
// event.
func startStream(t *testing.T, p *testProxy) (*http.Response, <-chan string) {
	t.Helper()
	resp := p.do(t, "POST", "/v1/chat/completions", streamBody, sseHeader)
	events := sseData(resp.Body)
	receive(t, events)
	return resp, events
}

// refusesConnections reports whether nothing accepts connections at addr.
func refusesConnections(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

func TestGracefulShutdownFinishesStream(t *testing.T) {
	up := startGatedStream(t)
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keyA, "KEYPOOL_UPSTREAM": up.URL, "KEYPOOL_TOKENS": token})
	resp, events := startStream(t, p)
	defer resp.Body.Close()

	p.signals <- syscall.SIGTERM
	addr := p.mainLn.Addr().String()
	waitFor(t, 10*time.Second, "the listener to close", func() bool { return refusesConnections(addr) })
	select {
	case err := <-p.done:
		t.Fatalf("serve returned (%v) with a stream in flight", err)
	default:
	}

	// The stream goes on to its end.
	up.next <- struct{}{}
	up.next <- struct{}{}
	var rest []string
	for e := range events {
		rest = append(rest, e)
	}
	if strings.Join(rest, " ") != `{"n":1} {"n":2} [DONE]` {
		t.Fatalf("the stream ended with %q", rest)
	}
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup's stop
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after the stream ended")
	}
	if !strings.Contains(p.logs.String(), `"signal":"terminated"`) {
		t.Errorf("no shutdown log line:\n%s", p.logs.String())
	}
}

func TestShutdownTimeoutCutsStream(t *testing.T) {
	up := startGatedStream(t)
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keyA, "KEYPOOL_UPSTREAM": up.URL, "KEYPOOL_TOKENS": token,
		"KEYPOOL_SHUTDOWN_TIMEOUT": "200ms"})
	resp, events := startStream(t, p)
	defer resp.Body.Close()
	p.cancel() // as SIGTERM does
	for range events {
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("serve after the timeout: %v, want nil (exit 0)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after its shutdown timeout")
	}
	select {
	case <-up.cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream stream was not cancelled")
	}
	if p.inFlight() != 0 {
		t.Errorf("%d slots still held", p.inFlight())
	}
	if !strings.Contains(p.logs.String(), "shutdown timeout") {
		t.Errorf("no log line about the timeout:\n%s", p.logs.String())
	}
}

func TestSecondSignalStopsWaiting(t *testing.T) {
	up := startGatedStream(t)
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS": keyA, "KEYPOOL_UPSTREAM": up.URL, "KEYPOOL_TOKENS": token,
		"KEYPOOL_SHUTDOWN_TIMEOUT": "1h"})
	resp, events := startStream(t, p)
	defer resp.Body.Close()
	p.signals <- syscall.SIGTERM
	p.signals <- syscall.SIGHUP // ignored while shutting down
	p.signals <- syscall.SIGINT
	for range events {
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a second signal did not end the shutdown")
	}
	<-up.cancelled
}
