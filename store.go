package keypool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"
)

// Store keeps the state that the keys of an account share where several
// processes can share it, so that replicas of a service using the same
// keys share their limits: requests in flight, request and token
// budgets, cooldowns, disablements and the learned in-flight limit.
// Package redisstore implements it on Redis; WithStore makes a pool use
// one.
//
// The pool keeps all this state in memory as well, and that copy is what
// it falls back to when the store fails: no request fails because of the
// store. So a store only adds a check: a request the pool would send is
// sent only if the store grants it a slot too (Take); the slot is given
// back (Release) when the answer has been read, and kept alive (Renew)
// meanwhile, every third of the lease time. What one replica learns of
// an account or a key (Block, SetLimit) holds for all of them at once.
//
// Accounts are named by IDs derived from Key.Account, or for a key of
// its own from a hash of its secret (see secretID), never by the secret
// itself: a key's default name depends on the keys listed before it. Every method is called with a context that bounds it to
// a short time, and never while the pool holds a lock. If the store also
// has a method Ready(context.Context) error, New calls it and fails when
// it does (redisstore does with WithPing); otherwise a store that cannot
// be reached at first only makes the pool start on its own limits.
type Store interface {
	// Take claims an in-flight slot on an account, and the request's
	// budgets, if nothing blocks them.
	Take(ctx context.Context, t StoreTake) (StoreTaken, error)
	// Release gives back the slot of a lease, and corrects the account's
	// TPM budget by refund tokens (negative to charge more). It wakes the
	// pools of every replica waiting on the account (see Watch), and
	// returns how many slots the account still holds in all replicas.
	Release(ctx context.Context, account, lease string, refund int) (inFlight int, err error)
	// Renew keeps the slots of leases alive for another lease time.
	Renew(ctx context.Context, account string, leases []string) error
	// Block records that an account, or one of its keys, may not be used
	// until a time; a zero Until clears every block of the account and
	// of the key (Pool.Enable).
	Block(ctx context.Context, b StoreBlock) error
	// SetLimit records the account's learned in-flight limit.
	SetLimit(ctx context.Context, account string, limit int) error
	// Watch calls wake with the account of every slot released anywhere,
	// as long as the store runs.
	Watch(wake func(account string))
}

// StoreTake is what a Take asks for.
type StoreTake struct {
	Account string // the account's ID
	Key     string // the ID of the key the request goes with
	// Lease is an ID for the slot, unique to this request's attempt: the
	// replica's own ID, a dash, and a number.
	Lease string
	// Limit is the in-flight limit the asking replica applies, to the
	// slots of every replica together: 0 for none. Replicas take on the
	// limit recorded with SetLimit (see StoreTaken.Limit), but a replica
	// probing a level above it asks with its own.
	Limit    int
	RPM, TPM int // the account's budgets; 0 for none
	Tokens   int // to take from the TPM budget
}

// StoreTaken is what a Take found.
type StoreTaken struct {
	OK bool
	// InFlight is the number of slots the account holds in all replicas,
	// this one included when OK.
	InFlight int
	// Why says what refused a Take that is not OK, and Until until when
	// (zero when it waits on slots held).
	Why   StoreRefusal
	Until time.Time
	// Limit is the learned limit recorded with SetLimit, or 0.
	Limit int
	// LeaseTime is how long the slot lives unless renewed: a replica
	// that dies gives its slots back within it. The pool renews a slot
	// held for long every third of it.
	LeaseTime time.Duration
}

// StoreRefusal is why a store refused a Take.
type StoreRefusal int

const (
	// RefusedNot: the Take is granted.
	RefusedNot StoreRefusal = iota
	// RefusedSlots: every slot is held.
	RefusedSlots
	// RefusedBudget: the RPM or TPM budget is spent until Until.
	RefusedBudget
	// RefusedCooling: the account cools down until Until.
	RefusedCooling
	// RefusedAccountDisabled: the account is disabled until Until.
	RefusedAccountDisabled
	// RefusedKeyDisabled: the key is disabled or ejected until Until.
	RefusedKeyDisabled
)

// StoreBlock is a block a Block records.
type StoreBlock struct {
	Account string
	Key     string // the key's ID, for KeyDisabled, and for clearing
	What    StoreRefusal
	Until   time.Time // zero: clear every block of the account and key
}

// ErrStoreUnavailable is what Pool.StoreErr wraps while the store fails
// and the pool keeps to its own limits.
var ErrStoreUnavailable = errors.New("keypool: the shared store is unavailable; keeping to local limits")

// WithStore makes the pool share its accounts' state with other
// replicas through s. Without it, state stays in this process.
func WithStore(s Store) Option {
	return func(c *poolConfig) error {
		if s == nil {
			return invalid("WithStore", "nil Store")
		}
		c.store = s
		return nil
	}
}

// secretID names a key to a Store, the same in every replica: "s:" and
// the first 64 bits of the secret's SHA-256, in hex. It is not the key's
// name, which for an unnamed key depends on the keys listed before it
// (sk-…cdef(2)), and it tells nothing of a secret of any real length.
func secretID(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return "s:" + hex.EncodeToString(sum[:8])
}
