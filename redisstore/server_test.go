package redisstore

import (
	"testing"

	"github.com/keypool/keypool/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// testRedis is a Redis for the tests; see package redistest.
type testRedis struct{ *redistest.Server }

// startRedis starts a Redis that the test stops when it ends.
func startRedis(t *testing.T) *testRedis {
	t.Helper()
	return &testRedis{redistest.Start(t)}
}

// client returns a client with the store's recommended options.
func (r *testRedis) client(t *testing.T) *redis.Client {
	c := redis.NewClient(ClientOptions(r.Addr))
	t.Cleanup(func() { c.Close() })
	return c
}

// freeAddr returns a loopback address no one listens on.
func freeAddr(t *testing.T) string { return redistest.FreeAddr(t) }

// redisClient returns a client with the store's options, closed by the
// caller's test... or left to the garbage collector for unreachable
// addresses, where it holds no connection.
func redisClient(addr string) *redis.Client { return redis.NewClient(ClientOptions(addr)) }
