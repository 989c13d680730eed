package main

import (
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/alicebob/miniredis/v2"
	"github.com/keypool/keypool"
	"github.com/keypool/keypool/redisstore"
	"github.com/redis/go-redis/v9"
)

// The replica scenarios' names.
func replicasName(n int, shared bool) string {
	if shared {
		return fmt.Sprintf("%d replicas, sharing Redis", n)
	}
	return fmt.Sprintf("%d replicas, no store", n)
}

// replicasClient sends through cfg.Replicas pools in one process, each
// told the caps, as that many replicas of a service would: requests go
// to them in turn. shared makes them share their limits through a Redis
// store: the one at cfg.Redis, or an embedded miniredis, which runs the
// same Lua, so that the demo needs no server.
func replicasClient(e env, shared bool) (*http.Client, error) {
	var addr string
	if shared {
		addr = e.cfg.Redis
		if addr == "" {
			m, err := miniredis.Run()
			if err != nil {
				return nil, err
			}
			e.onClose(m.Close)
			addr = m.Addr()
		}
	}
	rt := &replicas{}
	for range e.cfg.Replicas {
		var opts []keypool.Option
		if shared {
			rdb := redis.NewClient(redisstore.ClientOptions(addr))
			store := redisstore.New(rdb, redisstore.WithPrefix(fmt.Sprintf("simulate-%d:", e.cfg.Seed)))
			e.onClose(func() { store.Close(); rdb.Close() })
			opts = append(opts, keypool.WithStore(store))
		}
		keys := make([]keypool.Key, len(e.secrets))
		for i, s := range e.secrets {
			keys[i] = keypool.Key{Secret: s, MaxConcurrent: e.cfg.Cap}
		}
		pool, err := keypool.New(keys, opts...)
		if err != nil {
			return nil, err
		}
		rt.each = append(rt.each, keypool.NewTransport(pool, keypool.WithBase(e.base)))
	}
	return &http.Client{Transport: rt}, nil
}

// replicas hands requests to its transports in turn.
type replicas struct {
	each []http.RoundTripper
	next atomic.Uint64
}

func (r *replicas) RoundTrip(req *http.Request) (*http.Response, error) {
	return r.each[r.next.Add(1)%uint64(len(r.each))].RoundTrip(req)
}
