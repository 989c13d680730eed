// Package redisstore keeps the state that keypool's accounts share in
// Redis, so that replicas of a service using the same keys share their
// limits: requests in flight (as leases that expire unless renewed), the
// RPM and TPM budgets, cooldowns, disablements and the learned in-flight
// limit. Give a Store to keypool.New with keypool.WithStore:
//
//	rdb := redis.NewClient(redisstore.ClientOptions("localhost:6379"))
//	store := redisstore.New(rdb)
//	defer store.Close()
//	pool, err := keypool.New(keys, keypool.WithStore(store))
//
// Each acquire and each release is one round trip: a Lua script run by
// EVALSHA. The keys of one account share a hash tag, so any
// redis.UniversalClient works: a single node, Sentinel or Cluster.
// Accounts are named in Redis by a digest of their name; no secret ever
// reaches Redis.
//
// When Redis cannot be reached, or is slow, the pool keeps to its own
// limits (see keypool.Pool.StoreErr) and asks Redis again a second later;
// no request fails because of it.
package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/keypool/keypool"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Store is a keypool.Store on Redis. It is safe for concurrent use, and
// one Store may serve several pools.
type Store struct {
	rdb       redis.UniversalClient
	prefix    string
	ping      bool
	leaseTime time.Duration

	mu      sync.Mutex
	watches []func(account string)
	pubsub  *redis.PubSub
	done    chan struct{} // closed when the subscriber has stopped
}

var _ keypool.Store = (*Store)(nil)

// Option configures a Store; see New.
type Option func(*Store)

// WithPrefix sets the prefix of every Redis key and channel the store
// uses, so that several pools (or services) can share one Redis. The
// default is "keypool:". It must not hold braces, which Redis Cluster
// reads as a hash tag.
func WithPrefix(prefix string) Option {
	return func(s *Store) { s.prefix = prefix }
}

// WithLeaseTime sets how long a request's slot lives in Redis unless
// renewed: a replica that dies gives its slots back within it. Pools
// renew the slots they hold every third of it. The default is 30 s; it
// cannot be less than a second.
func WithLeaseTime(d time.Duration) Option {
	return func(s *Store) { s.leaseTime = max(d, time.Second) }
}

// WithPing makes keypool.New fail when Redis does not answer a PING.
// Without it a pool starts on its own limits and joins Redis when it
// answers.
func WithPing() Option {
	return func(s *Store) { s.ping = true }
}

// New returns a store on the Redis that c reaches. The caller keeps c
// and closes it after Close. c should fail fast: see ClientOptions.
// New panics if the prefix holds braces.
func New(c redis.UniversalClient, opts ...Option) *Store {
	s := &Store{rdb: c, prefix: "keypool:", leaseTime: 30 * time.Second}
	for _, o := range opts {
		o(s)
	}
	if c == nil {
		panic(fmt.Errorf("%w: redisstore.New(nil)", keypool.ErrInvalidConfig))
	}
	for _, r := range s.prefix {
		if r == '{' || r == '}' {
			panic(fmt.Errorf("%w: redisstore.WithPrefix(%q): braces would break the hash tags Redis Cluster needs", keypool.ErrInvalidConfig, s.prefix))
		}
	}
	return s
}

// ClientOptions returns options for a Redis client on addr that suit a
// store: every command fails within 100 ms instead of hanging or being
// retried (a retried script could run twice), and the connection sends
// nothing older servers refuse. keypool bounds each call by a context
// too.
func ClientOptions(addr string) *redis.Options {
	return &redis.Options{
		Addr:                  addr,
		DialTimeout:           100 * time.Millisecond,
		DialerRetries:         1,
		ReadTimeout:           100 * time.Millisecond,
		WriteTimeout:          100 * time.Millisecond,
		PoolTimeout:           100 * time.Millisecond,
		MaxRetries:            -1,
		ContextTimeoutEnabled: true,
		DisableIdentity:       true,
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode: maintnotifications.ModeDisabled,
		},
	}
}

// Ready reports whether the store can be used: with WithPing, whether
// Redis answers; without, always nil.
func (s *Store) Ready(ctx context.Context) error {
	if !s.ping {
		return nil
	}
	return s.rdb.Ping(ctx).Err()
}

// keys returns the Redis keys of an account: its state hash, its leases
// and the replicas waiting for one, under one hash tag made of a digest
// of its name.
func (s *Store) keys(account string) []string {
	sum := sha256.Sum256([]byte(account))
	tag := "{" + hex.EncodeToString(sum[:12]) + "}"
	return []string{s.prefix + tag + ":state", s.prefix + tag + ":leases", s.prefix + tag + ":wanting"}
}

func (s *Store) channel() string { return s.prefix + "released" }

// keyField is the hash field of a key's block.
func keyField(key string) string { return "key:" + key }

// Take claims a slot and the request's budgets.
func (s *Store) Take(ctx context.Context, t keypool.StoreTake) (keypool.StoreTaken, error) {
	replica, _, _ := strings.Cut(t.Lease, "-")
	vals, err := takeScript.Run(ctx, s.rdb, s.keys(t.Account),
		t.Lease, s.leaseTime.Milliseconds(), t.Limit, t.RPM, t.TPM, t.Tokens, keyField(t.Key), replica).Int64Slice()
	if err != nil {
		return keypool.StoreTaken{}, err
	}
	if len(vals) != 4 {
		return keypool.StoreTaken{}, fmt.Errorf("redisstore: take script answered %d values, want 4", len(vals))
	}
	got := keypool.StoreTaken{
		OK:        vals[0] == 0,
		Why:       keypool.StoreRefusal(vals[0]),
		InFlight:  int(vals[2]),
		Limit:     int(vals[3]),
		LeaseTime: s.leaseTime,
	}
	if vals[1] > 0 {
		got.Until = time.Now().Add(time.Duration(vals[1]) * time.Millisecond)
	}
	return got, nil
}

// Release gives a slot back and corrects the TPM budget by refund.
func (s *Store) Release(ctx context.Context, account, lease string, refund int) (int, error) {
	n, err := releaseScript.Run(ctx, s.rdb, s.keys(account)[:2], lease, refund, s.channel(), account).Int()
	return n, err
}

// Renew keeps leases alive for another lease time.
func (s *Store) Renew(ctx context.Context, account string, leases []string) error {
	if len(leases) == 0 {
		return nil
	}
	args := make([]any, 0, len(leases)+1)
	args = append(args, s.leaseTime.Milliseconds())
	for _, l := range leases {
		args = append(args, l)
	}
	return renewScript.Run(ctx, s.rdb, s.keys(account)[1:2], args...).Err()
}

// maxBlock bounds a block's length, so that "for ever" fits.
const maxBlock = 10 * 365 * 24 * time.Hour

// Block records a block, or clears the account's and the key's.
func (s *Store) Block(ctx context.Context, b keypool.StoreBlock) error {
	state := s.keys(b.Account)[0]
	if b.Until.IsZero() {
		return s.rdb.HDel(ctx, state, "off", "cool", keyField(b.Key)).Err()
	}
	var field string
	switch b.What {
	case keypool.RefusedCooling:
		field = "cool"
	case keypool.RefusedAccountDisabled:
		field = "off"
	case keypool.RefusedKeyDisabled:
		field = keyField(b.Key)
	default:
		return fmt.Errorf("redisstore: cannot block for %d", b.What)
	}
	d := min(max(time.Until(b.Until), 0), maxBlock)
	return blockScript.Run(ctx, s.rdb, []string{state}, field, d.Milliseconds()).Err()
}

// SetLimit records the account's learned limit.
func (s *Store) SetLimit(ctx context.Context, account string, limit int) error {
	return s.rdb.HSet(ctx, s.keys(account)[0], "limit", limit).Err()
}

// Watch calls wake with the account of every slot released by any
// replica, until Close. The first call subscribes to the store's channel.
func (s *Store) Watch(wake func(account string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watches = append(s.watches, wake)
	if s.pubsub != nil {
		return
	}
	s.pubsub = s.rdb.Subscribe(context.Background(), s.channel())
	s.done = make(chan struct{})
	go s.listen(s.pubsub.Channel(), s.done)
}

// listen hands released accounts to the watchers until the subscription
// closes. Messages lost while the connection is down are made good by
// keypool, which looks again on its own after a short while.
func (s *Store) listen(ch <-chan *redis.Message, done chan struct{}) {
	defer close(done)
	for m := range ch {
		s.mu.Lock()
		watches := s.watches
		s.mu.Unlock()
		for _, w := range watches {
			w(m.Payload)
		}
	}
}

// Close stops the subscription Watch started. It does not close the
// client, which belongs to the caller.
func (s *Store) Close() error {
	s.mu.Lock()
	ps, done := s.pubsub, s.done
	s.pubsub, s.watches = nil, nil
	s.mu.Unlock()
	if ps == nil {
		return nil
	}
	err := ps.Close()
	<-done
	if errors.Is(err, redis.ErrClosed) {
		err = nil
	}
	return err
}
