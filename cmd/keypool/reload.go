package main

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"

	"github.com/keypool/keypool"
)

// keyEntry is a key in the pool as the key list gave it, and the name the
// pool knows it by.
type keyEntry struct {
	key  keypool.Key // holds the secret
	name string
}

// liveKeys tracks the pool's keys by secret, so that a reload can tell
// which keys came, went or changed.
type liveKeys struct {
	mu      sync.Mutex // one reload at a time
	entries []keyEntry // in the pool's order
}

func newLiveKeys(keys []keypool.Key, names []string) *liveKeys {
	l := &liveKeys{entries: make([]keyEntry, len(keys))}
	for i, k := range keys {
		l.entries[i] = keyEntry{key: k, name: names[i]}
	}
	return l
}

// reloadPlan is how the pool goes from one key list to the next with
// Pool.Add, Remove, SetWeight and SetLimits, so that requests in flight
// keep their keys and waiting requests are served throughout.
type reloadPlan struct {
	limits  []limitChange // on keys in the pool, before keys join their accounts
	weights []weightChange
	add     []keypool.Key // secrets not in the pool yet
	gone    []string      // names of keys no longer listed
	// replaced keys changed more than weight and limits (name, account,
	// base URL, models): each is removed, then added as listed now.
	replaced []string
	readd    []keypool.Key
	kept     int // keys that stay, changed in place or not

	next map[string]keypool.Key // the next list by secret
}

type limitChange struct {
	name string
	to   keypool.Limits
}

type weightChange struct {
	name string
	to   float64
}

func (p *reloadPlan) empty() bool {
	return len(p.limits)+len(p.weights)+len(p.add)+len(p.gone)+len(p.replaced) == 0
}

// planReload compares the pool's keys with the next list, which
// checkKeys has accepted.
func planReload(old []keyEntry, next []keypool.Key) (*reloadPlan, error) {
	p := &reloadPlan{next: make(map[string]keypool.Key, len(next))}
	for _, k := range next {
		p.next[k.Secret] = k
	}
	for _, e := range old {
		p.compare(e)
	}
	p.planAccountLimits(old, next)
	inPool := make(map[string]bool, len(old))
	for _, e := range old {
		inPool[e.key.Secret] = true
	}
	for _, k := range next {
		if !inPool[k.Secret] {
			p.add = append(p.add, k)
		}
	}
	if p.kept+len(p.add) == 0 && len(p.readd) > 0 {
		return nil, errWouldEmpty
	}
	return p, nil
}

var errWouldEmpty = errors.New("every key would leave the pool before its replacement joins it " +
	"(a change of name, account, base or models removes the key and adds it again, and a pool cannot be empty); " +
	"add another key first, or restart")

// compare plans what becomes of e, a key in the pool: it goes, it is
// replaced, or it stays with its weight and own limits changed in place.
func (p *reloadPlan) compare(e keyEntry) {
	k, ok := p.next[e.key.Secret]
	switch {
	case !ok:
		p.gone = append(p.gone, e.name)
	case !changesInPlace(e.key, k):
		p.replaced = append(p.replaced, e.name)
		p.readd = append(p.readd, k)
	default:
		p.kept++
		if w := weightOf(k); w != weightOf(e.key) {
			p.weights = append(p.weights, weightChange{e.name, w})
		}
		if k.Account == "" && limitsOf(k) != limitsOf(e.key) {
			p.limits = append(p.limits, limitChange{e.name, limitsOf(k)})
		}
	}
}

// planAccountLimits changes an account's limits through any of its keys
// in the pool, before new keys join it, so that they agree with it.
func (p *reloadPlan) planAccountLimits(old []keyEntry, next []keypool.Key) {
	oldKeys := make([]keypool.Key, len(old))
	for i, e := range old {
		oldKeys[i] = e.key
	}
	oldAccounts, nextAccounts := accountLimits(oldKeys), accountLimits(next)
	for _, e := range old {
		a := e.key.Account
		if to, listed := nextAccounts[a]; a != "" && listed && to != oldAccounts[a] {
			p.limits = append(p.limits, limitChange{e.name, to})
			oldAccounts[a] = to // once per account
		}
	}
}

// changesInPlace reports whether key a can become b through SetWeight and
// SetLimits alone: they differ in nothing else. Any other field, including
// those the key syntax may gain, makes the change a removal and an addition.
func changesInPlace(a, b keypool.Key) bool {
	for _, k := range []*keypool.Key{&a, &b} {
		k.Weight, k.RPM, k.TPM, k.MaxConcurrent = 0, 0, 0, 0
		if len(k.Models) == 0 {
			k.Models = nil
		}
	}
	return reflect.DeepEqual(a, b)
}

func weightOf(k keypool.Key) float64 {
	if k.Weight == 0 {
		return 1 // keypool's meaning of 0
	}
	return k.Weight
}

// apply carries out the plan on pool, whose keys are entries, and returns
// its keys afterwards. On an error the entries returned are still the
// pool's keys: whatever was done is recorded.
func (p *reloadPlan) apply(pool *keypool.Pool, entries []keyEntry) ([]keyEntry, error) {
	entries = slices.Clone(entries)
	for _, c := range p.limits {
		if err := pool.SetLimits(c.name, c.to); err != nil {
			return entries, err
		}
	}
	for _, c := range p.weights {
		if err := pool.SetWeight(c.name, c.to); err != nil {
			return entries, err
		}
	}
	add := func(keys []keypool.Key) error {
		if len(keys) == 0 {
			return nil
		}
		if err := pool.Add(keys...); err != nil {
			return err
		}
		// Add appends, and Stats lists keys in the pool's order.
		stats := pool.Stats()
		if len(stats) != len(entries)+len(keys) {
			return fmt.Errorf("the pool holds %d keys after adding %d to %d", len(stats), len(keys), len(entries))
		}
		base := len(entries)
		for i, k := range keys {
			entries = append(entries, keyEntry{key: k, name: stats[base+i].Name})
		}
		return nil
	}
	remove := func(names []string) error {
		for _, n := range names {
			if err := pool.Remove(n); err != nil {
				return err
			}
			entries = slices.DeleteFunc(entries, func(e keyEntry) bool { return e.name == n })
		}
		return nil
	}
	// New keys join first when nothing else would be left in the pool;
	// otherwise keys go first, which frees any name a new key may take.
	steps := []func() error{func() error { return remove(p.gone) }, func() error { return add(p.add) }}
	if p.kept == 0 {
		steps[0], steps[1] = steps[1], steps[0]
	}
	steps = append(steps, func() error { return remove(p.replaced) }, func() error { return add(p.readd) })
	for _, step := range steps {
		if err := step(); err != nil {
			return entries, err
		}
	}
	for i, e := range entries { // the keys changed in place, as listed now
		entries[i].key = p.next[e.key.Secret]
	}
	return entries, nil
}

// named returns the keys of entries with the names the pool gave them,
// to build a scratch pool with the same names.
func named(entries []keyEntry) []keypool.Key {
	keys := make([]keypool.Key, len(entries))
	for i, e := range entries {
		keys[i] = e.key
		keys[i].Name = e.name
	}
	return keys
}

// reloadResult says what a reload changed, for the log.
type reloadResult struct {
	added, removed, changed, keys int
}

// reload reads the key list again and applies it to the pool. A list
// that cannot be read, parsed or checked, or whose plan fails on a
// scratch copy of the pool, is refused before the pool is touched.
func (s *server) reload() (reloadResult, error) {
	s.keys.mu.Lock()
	defer s.keys.mu.Unlock()
	next, err := s.cfg.keys.load()
	if err != nil {
		return reloadResult{}, err
	}
	if _, err := checkKeys(&s.cfg, s.cfg.keys.from, next); err != nil {
		return reloadResult{}, err
	}
	plan, err := planReload(s.keys.entries, next)
	if err != nil {
		return reloadResult{}, err
	}
	res := reloadResult{added: len(plan.add), removed: len(plan.gone), keys: len(next)}
	res.changed = len(plan.replaced) + len(plan.weights) + len(plan.limits)
	if plan.empty() {
		return res, nil
	}
	scratch, err := keypool.New(named(s.keys.entries))
	if err != nil {
		return reloadResult{}, fmt.Errorf("rebuilding the current pool to try the change: %w", err)
	}
	if _, err := plan.apply(scratch, s.keys.entries); err != nil {
		return reloadResult{}, err
	}
	entries, err := plan.apply(s.pool, s.keys.entries)
	s.keys.entries = entries
	if err != nil {
		return reloadResult{}, &partialReloadError{err: err, keys: len(entries)}
	}
	return res, nil
}

// partialReloadError is a reload that failed after changing the live
// pool, which the trial on a scratch pool should make impossible.
type partialReloadError struct {
	err  error
	keys int
}

func (e *partialReloadError) Error() string {
	return fmt.Sprintf("%v; applied in part: the pool now holds %d keys", e.err, e.keys)
}

func (e *partialReloadError) Unwrap() error { return e.err }
