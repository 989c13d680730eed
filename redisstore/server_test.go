package redisstore

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// testRedis is a Redis for the tests: a real redis-server on a free
// loopback port, with no persistence, in a directory of its own; or,
// when none is installed, miniredis, which runs the same Lua. With
// KEYPOOL_REQUIRE_REDIS=1 (CI sets it) a missing redis-server fails the
// tests instead.
type testRedis struct {
	t    *testing.T
	addr string
	dir  string
	cmd  *exec.Cmd            // the real server, when running
	mini *miniredis.Miniredis // the embedded one, when running
}

var announceMini sync.Once

// startRedis starts a Redis that the test stops when it ends.
func startRedis(t *testing.T) *testRedis {
	t.Helper()
	r := &testRedis{t: t, addr: freeAddr(t), dir: t.TempDir()}
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("KEYPOOL_REQUIRE_REDIS") == "1" {
			t.Fatal("redis-server is not installed and KEYPOOL_REQUIRE_REDIS=1: install it (apt-get install redis-server)")
		}
		announceMini.Do(func() {
			fmt.Fprintln(os.Stderr, "redisstore tests: redis-server not found, running against miniredis (set KEYPOOL_REQUIRE_REDIS=1 to require the real server)")
		})
	}
	r.start()
	t.Cleanup(r.stop)
	return r
}

// real reports whether the tests run against a real redis-server.
func (r *testRedis) real() bool { return r.mini == nil }

func (r *testRedis) start() {
	r.t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		m := miniredis.NewMiniRedis()
		if err := m.StartAddr(r.addr); err != nil {
			r.t.Fatal(err)
		}
		r.mini = m
		return
	}
	_, port, _ := net.SplitHostPort(r.addr)
	r.cmd = exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--daemonize", "no", "--loglevel", "warning")
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: r.addr, MaxRetries: -1, DisableIdentity: true})
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c.Ping(context.Background()).Err() == nil {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatal("redis-server did not answer within 10s")
		}
	}
}

// stop stops the server, losing everything it held.
func (r *testRedis) stop() {
	if r.mini != nil {
		r.mini.Close()
		r.mini = nil
	}
	if r.cmd != nil {
		r.cmd.Process.Kill()
		r.cmd.Wait()
		r.cmd = nil
	}
}

// client returns a client with the store's recommended options.
func (r *testRedis) client(t *testing.T) *redis.Client {
	c := redis.NewClient(ClientOptions(r.addr))
	t.Cleanup(func() { c.Close() })
	return c
}

// freeAddr returns a loopback address no one listens on.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// redisClient returns a client with the store's options, closed by the
// caller's test... or left to the garbage collector for unreachable
// addresses, where it holds no connection.
func redisClient(addr string) *redis.Client { return redis.NewClient(ClientOptions(addr)) }
