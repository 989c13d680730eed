package keypool

import (
	"testing"
	"time"
)

func TestTokenBucketSettlesAndResyncs(t *testing.T) {
	now := testNow
	b := newTokenBucket(6000, now) // 100 tokens a second, 6,000 held
	if ok, _ := b.take(now, 5000); !ok {
		t.Fatal("could not take 5,000 of 6,000")
	}
	ok, at := b.take(now, 2000)
	if ok || at.Sub(now) != 10*time.Second {
		t.Fatalf("took 2,000 of 1,000 left, or wrong wait: %v %v", ok, at.Sub(now))
	}
	b.adjust(now, 4000) // the request used 1,000 of the 5,000 reserved
	if ok, _ := b.take(now, 5000); !ok {
		t.Fatal("the refund did not come back")
	}
	b.adjust(now, -3000) // a request used 3,000 more than reserved: a debt
	if ok, at := b.take(now, 1); ok || at.Sub(now) < 30*time.Second {
		t.Fatalf("debt not owed: %v %v", ok, at.Sub(now))
	}
	c := newTokenBucket(6000, now)
	c.lowerTo(now, 100)
	if ok, _ := c.take(now, 101); ok {
		t.Error("lowerTo did not lower")
	}
	c.lowerTo(now, 5000) // never raises
	if ok, _ := c.take(now, 101); ok {
		t.Error("lowerTo raised the bucket")
	}
}
