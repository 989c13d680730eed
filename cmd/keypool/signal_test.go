//go:build unix

package main

import (
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRealSignals sends real SIGHUP and SIGTERM to the built binary: the
// reload adds a key, and SIGTERM lets a stream in flight finish, refuses
// new connections meanwhile, and exits 0.
func TestRealSignals(t *testing.T) {
	up := startGatedStream(t)
	file := filepath.Join(t.TempDir(), "keys")
	writeFile(t, file, keyA)
	c := startChild(t, "KEYPOOL_KEYS_FILE="+file, "KEYPOOL_UPSTREAM="+up.URL, "KEYPOOL_TOKENS="+token)
	p := &testProxy{URL: "http://" + c.addr, client: &http.Client{Transport: &http.Transport{}}}
	defer p.client.CloseIdleConnections()

	writeFile(t, file, keyA+"\n"+keyB+";weight=2\n")
	c.cmd.Process.Signal(syscall.SIGHUP)
	if m := c.waitLog(t, "keys reloaded"); m["keys"] != 2.0 || m["added"] != 1.0 {
		t.Errorf("reload logged %v", m)
	}
	var rep healthReport
	if status := getJSON(t, p.client, p.URL+"/healthz", &rep); status != 200 || rep.Keys != 2 {
		t.Errorf("after SIGHUP: %d %+v", status, rep)
	}
	if status, body := p.chat(t, chatBody); status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}

	resp, events := startStream(t, p)
	defer resp.Body.Close()
	c.cmd.Process.Signal(syscall.SIGTERM)
	c.waitLog(t, "shutting down")
	waitFor(t, 10*time.Second, "the listener to close", func() bool { return refusesConnections(c.addr) })
	up.next <- struct{}{}
	up.next <- struct{}{}
	var rest []string
	for e := range events {
		rest = append(rest, e)
	}
	if strings.Join(rest, " ") != `{"n":1} {"n":2} [DONE]` {
		t.Errorf("the stream ended with %q", rest)
	}
	select {
	case err := <-c.done:
		c.done <- err
		if err != nil {
			t.Errorf("exit: %v, want 0\n%s", err, c.logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the process did not exit after SIGTERM")
	}
	assertNoSecrets(t, "process output", c.logs.String(), keyA, keyB, token)
}
