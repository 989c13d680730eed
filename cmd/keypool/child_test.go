package main

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// child is the built command running as a process, logging JSON.
type child struct {
	cmd  *exec.Cmd
	addr string
	logs *syncBuffer
	mu   sync.Mutex
	msgs []map[string]any
	done chan error
}

// startChild starts the binary with env and waits until it listens.
func startChild(t *testing.T, env ...string) *child {
	t.Helper()
	c := &child{cmd: exec.Command(binary(t)), logs: &syncBuffer{}, done: make(chan error, 1)}
	c.cmd.Env = append([]string{"PATH=/usr/bin:/bin", "KEYPOOL_ADDR=127.0.0.1:0", "KEYPOOL_LOG_FORMAT=json"}, env...)
	c.cmd.Stdout = c.logs
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			c.logs.Write(append(sc.Bytes(), '\n'))
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				c.mu.Lock()
				c.msgs = append(c.msgs, m)
				c.mu.Unlock()
			}
		}
	}()
	go func() {
		<-scanned // Wait closes the pipe; read it all first
		c.done <- c.cmd.Wait()
	}()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.done
	})
	c.addr = c.waitLog(t, "listening")["addr"].(string)
	return c
}

// waitLog waits for a log line with the message msg, after any returned
// before.
func (c *child) waitLog(t *testing.T, msg string) map[string]any {
	t.Helper()
	var found map[string]any
	waitFor(t, 20*time.Second, "the log line "+msg, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, m := range c.msgs {
			if m["msg"] == msg {
				found = m
				c.msgs = c.msgs[i+1:]
				return true
			}
		}
		return false
	})
	return found
}
