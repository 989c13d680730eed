// Package redistest runs a Redis for tests: a real redis-server on a free
// loopback port, with no persistence, in a directory of its own; or, when
// none is installed, miniredis, which runs the same Lua. With
// KEYPOOL_REQUIRE_REDIS=1 (CI sets it) a missing redis-server fails the
// test instead.
//
// It speaks to Redis only to wait for it, by a bare PING, so that
// go-redis stays a dependency of the packages that use Redis alone.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// Server is a Redis that a test started.
type Server struct {
	// Addr is the server's address, host:port on loopback. It stays the
	// same across Stop and Restart.
	Addr string

	t    testing.TB
	dir  string
	cmd  *exec.Cmd            // the real server, when running
	mini *miniredis.Miniredis // the embedded one, when running
}

var announceMini sync.Once

// Start starts a Redis that is stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, Addr: FreeAddr(t), dir: t.TempDir()}
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("KEYPOOL_REQUIRE_REDIS") == "1" {
			t.Fatal("redis-server is not installed and KEYPOOL_REQUIRE_REDIS=1: install it (apt-get install redis-server)")
		}
		announceMini.Do(func() {
			fmt.Fprintln(os.Stderr, "redistest: redis-server not found, running against miniredis (set KEYPOOL_REQUIRE_REDIS=1 to require the real server)")
		})
	}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Real reports whether the tests run against a real redis-server.
func (s *Server) Real() bool { return s.mini == nil }

// Restart starts the server again on the same address after Stop, empty.
func (s *Server) Restart() {
	s.t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		m := miniredis.NewMiniRedis()
		if err := m.StartAddr(s.Addr); err != nil {
			s.t.Fatal(err)
		}
		s.mini = m
		return
	}
	_, port, _ := net.SplitHostPort(s.Addr)
	s.cmd = exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--daemonize", "no", "--loglevel", "warning")
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !ping(s.Addr); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			s.t.Fatal("redis-server did not answer within 10s")
		}
	}
}

// Stop stops the server, losing everything it held.
func (s *Server) Stop() {
	if s.mini != nil {
		s.mini.Close()
		s.mini = nil
	}
	if s.cmd != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// ping reports whether a Redis on addr answers PING.
func ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// FreeAddr returns a loopback address no one listens on.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}
