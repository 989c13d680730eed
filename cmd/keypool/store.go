package main

import (
	"errors"
	"fmt"
	"net/url"

	"github.com/keypool/keypool"
)

// errStoreNotSupported is returned while the shared store does not exist.
var errStoreNotSupported = errors.New("the shared Redis store is not supported yet; unset it to keep limits in this process")

// storeOptions returns the pool options for the store that KEYPOOL_REDIS_URL
// names, so that several replicas share limits; none when it is unset.
// The URL may hold a password: errors never quote it.
//
// LATER: once redisstore exists, build a client from u and return
// []keypool.Option{keypool.WithStore(redisstore.New(client))}; newServer
// already passes these options to keypool.New.
func storeOptions(raw, from string) ([]keypool.Option, error) {
	if raw == "" {
		return nil, nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
		return nil, fmt.Errorf("%s is not a redis:// or rediss:// URL", from)
	}
	return nil, fmt.Errorf("%s: %w", from, errStoreNotSupported)
}
