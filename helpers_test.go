package keypool

import "context"

// acquireFor takes a key for r from p, waiting at most the pool's
// maximum wait, as a request's first attempt does.
func acquireFor(p *Pool, ctx context.Context, r *acquireRequest) (*lease, error) {
	l, _, err := p.acquire(ctx, r, p.cfg.maxWait)
	return l, err
}
