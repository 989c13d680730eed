package keypool

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// Add adds keys to a pool that is serving requests. They are checked as
// New checks keys, together with the keys already in the pool (a secret
// already there is a duplicate); an error adds none of them. Keys that
// name an existing Account join it and share its state.
func (p *Pool) Add(keys ...Key) error {
	if len(keys) == 0 {
		return nil
	}
	p.reconfig.Lock()
	defer p.reconfig.Unlock()
	old := p.snap.Load()
	all := make([]Key, 0, len(old.keys)+len(keys))
	for _, k := range old.keys {
		all = append(all, k.cfg)
	}
	all = append(all, keys...)
	normalized, limits, err := validateKeys(all)
	if err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) && ce.Index >= len(old.keys) {
			ce.Index -= len(old.keys) // number the key as the caller did
		}
		return err
	}
	now := p.clock.Now()
	for _, k := range old.keys {
		if lim := limits[k.cfg.Account]; k.cfg.Account != "" && lim != k.cfg.limits() {
			// A new key declared a limit its account had left open.
			k.account.setLimits(now, lim)
			k.cfg.setLimits(lim)
		}
	}
	added := p.buildKeys(normalized[len(old.keys):], limits, old.keys)
	p.setKeys(append(slices.Clone(old.keys), added...))
	p.wake()
	return nil
}

// Remove takes the key with the given name out of the pool. Requests in
// flight on it finish normally; requests waiting for it are served by the
// other keys. The last key cannot be removed.
func (p *Pool) Remove(name string) error {
	return p.changeKey(name, func(keys []*keyState, k *keyState) ([]*keyState, error) {
		if len(keys) == 1 {
			return nil, fmt.Errorf("%w: %q is the last key", ErrNoKeys, name)
		}
		return slices.DeleteFunc(slices.Clone(keys), func(x *keyState) bool { return x == k }), nil
	})
}

// SetWeight changes the weight of the key with the given name; 0 means 1.
func (p *Pool) SetWeight(name string, weight float64) error {
	if math.IsNaN(weight) || math.IsInf(weight, 0) || weight < 0 {
		return fmt.Errorf("%w: SetWeight(%s): weight %v; want a finite number, 0 (meaning 1) or more", ErrInvalidConfig, quoteShort(name), weight)
	}
	if weight == 0 {
		weight = 1
	}
	return p.changeKey(name, func(keys []*keyState, k *keyState) ([]*keyState, error) {
		k.cfg.Weight = weight
		return keys, nil
	})
}

// SetLimits changes the limits of the key with the given name, or of its
// whole account if it has one; 0 means no limit (for MaxConcurrent with
// adaptive limits: learn it). Requests in flight keep their slots.
func (p *Pool) SetLimits(name string, lim Limits) error {
	if err := lim.check(); err != nil {
		return fmt.Errorf("%w: SetLimits(%s): %v", ErrInvalidConfig, quoteShort(name), err)
	}
	return p.changeKey(name, func(keys []*keyState, k *keyState) ([]*keyState, error) {
		k.account.setLimits(p.clock.Now(), lim)
		for _, other := range keys {
			if other.account == k.account {
				other.cfg.setLimits(lim)
			}
		}
		return keys, nil // a new snapshot: whether requests need token estimates may change
	})
}

// changeKey applies change to the key with the given name under the
// reconfiguration lock, then puts the keys change returns in place and
// wakes the waiters, whom the change may let through.
func (p *Pool) changeKey(name string, change func(keys []*keyState, k *keyState) ([]*keyState, error)) error {
	p.reconfig.Lock()
	defer p.reconfig.Unlock()
	old := p.snap.Load()
	k, err := old.key(name)
	if err != nil {
		return err
	}
	keys, err := change(old.keys, k)
	if err != nil {
		return err
	}
	p.setKeys(keys)
	p.wake()
	return nil
}

// key returns the key with the given name, or an error wrapping
// ErrUnknownKey. The error never repeats a name that could be a secret
// passed by mistake: long names are not shown.
func (s *snapshot) key(name string) (*keyState, error) {
	if k := s.byName[name]; k != nil {
		return k, nil
	}
	for _, k := range s.keys {
		if k.cfg.Secret == name {
			return nil, fmt.Errorf("%w: that is the secret of key %q, not its name", ErrUnknownKey, k.name)
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrUnknownKey, quoteShort(name))
}
