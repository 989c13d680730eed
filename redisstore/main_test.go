package redisstore

import (
	"os"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/logging"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// go-redis reports each failed dial on its global logger, to stderr.
	// The tests cause them on purpose (they stop Redis, and dial where
	// nothing listens), so the test binary, replicas included, drops
	// those and prints the rest; what a failure means is each test's to
	// say. The store itself leaves the logger to its users.
	redis.SetLogger(logging.NewBlacklistLogger([]string{"failed to dial"}))
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	goleak.VerifyTestMain(m,
		// go-redis probes a server that is down once a second, for a
		// second after Close (the stop-Redis test).
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}
