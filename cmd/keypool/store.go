package main

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/redisstore"
)

// parseRedisURL reads KEYPOOL_REDIS_URL with redis.ParseURL
// (redis://[user:password@]host:port[/db], rediss:// for TLS, or
// unix://); nil when it is unset. The URL may hold a password: errors
// never quote it.
func parseRedisURL(raw, from string) (*redis.Options, error) {
	if raw == "" {
		return nil, nil
	}
	opts, err := redis.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("%s is not a Redis URL (%s); want redis://[:password@]host:port[/db] or rediss://…",
			from, redisURLReason(raw, err))
	}
	return opts, nil
}

// redisURLReason is why raw did not parse, unless the reason might quote
// a part of the URL's user or password. url.Parse's errors quote the
// whole URL, and their reasons may quote a part of it.
func redisURLReason(raw string, err error) string {
	const vague = "it does not parse as a URL"
	var ue *url.Error
	if errors.As(err, &ue) {
		if strings.Contains(raw, "@") {
			return vague
		}
		err = ue.Err
	}
	reason := strings.TrimPrefix(err.Error(), "redis: ")
	if u, perr := url.Parse(raw); perr == nil && u.User != nil {
		pw, _ := u.User.Password()
		for _, secret := range []string{u.User.Username(), pw} {
			if secret != "" && strings.Contains(reason, secret) {
				return vague
			}
		}
	}
	return reason
}

// openStore connects the Redis store opts names, so that replicas share
// their accounts' limits, and returns the pool option for it and a func
// that closes it; no option when opts is nil. The client fails fast, as
// redisstore.ClientOptions advises: a Redis that is slow or gone costs
// the proxy its shared limits, never a request.
func openStore(opts *redis.Options) ([]keypool.Option, func()) {
	if opts == nil {
		return nil, func() {}
	}
	o := *opts
	fast := redisstore.ClientOptions(o.Addr)
	// A retried script could run twice, taking two slots for one request.
	o.MaxRetries = -1
	if o.DialTimeout == 0 {
		o.DialTimeout = fast.DialTimeout
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = fast.ReadTimeout
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = fast.WriteTimeout
	}
	if o.PoolTimeout == 0 {
		o.PoolTimeout = fast.PoolTimeout
	}
	o.DialerRetries = fast.DialerRetries
	o.ContextTimeoutEnabled = true
	o.DisableIdentity = true
	o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	rdb := redis.NewClient(&o)
	store := redisstore.New(rdb)
	closeStore := func() {
		store.Close()
		rdb.Close()
	}
	return []keypool.Option{keypool.WithStore(store)}, closeStore
}
