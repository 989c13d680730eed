package keypool

import (
	"math"
	"testing"
)

func TestScheduleIsSmoothAndWeighted(t *testing.T) {
	weights := []float64{1, 2, 3, 4}
	sched := buildSchedule(weights)
	total := 10.0
	counts := make([]int, len(weights))
	for _, k := range sched {
		counts[k]++
	}
	for i, w := range weights {
		share := float64(counts[i]) / float64(len(sched))
		if math.Abs(share-w/total) > 0.01 {
			t.Errorf("key %d: share %.3f, want %.3f", i, share, w/total)
		}
	}
	// Smooth: in every window of 50 slots (around the cycle), each key's
	// count is within 2 of its expected count.
	const window = 50
	for start := range sched {
		c := make([]int, len(weights))
		for j := range window {
			c[sched[(start+j)%len(sched)]]++
		}
		for i, w := range weights {
			if want := window * w / total; math.Abs(float64(c[i])-want) > 2 {
				t.Fatalf("window at %d: key %d got %d, want about %.0f", start, i, c[i], want)
			}
		}
	}
}

func TestScheduleGivesEveryKeyASlot(t *testing.T) {
	sched := buildSchedule([]float64{1e-9, 1e9})
	seen := map[int32]bool{}
	for _, k := range sched {
		seen[k] = true
	}
	if !seen[0] || !seen[1] {
		t.Fatalf("a key has no slot: %v", seen)
	}
	big := make([]float64, 20000)
	for i := range big {
		big[i] = 1
	}
	if got := len(buildSchedule(big)); got < 20000 {
		t.Fatalf("cycle of %d slots for 20000 keys", got)
	}
}

// Weights whose sum overflows keep their shares: a key of weight 1 next
// to two of 1e308 gets almost nothing.
func TestHugeWeights(t *testing.T) {
	p, _ := newFakeClockPool(t, []Key{{Secret: "sk-a", Weight: 1e308}, {Secret: "sk-b", Weight: 1e308}, {Secret: "sk-c", Weight: 1}})
	proveAll(p)
	small := 0
	const n = 3000
	for range n {
		l := mustAcquire(t, p, &acquireRequest{})
		if l.key.cfg.Secret == "sk-c" {
			small++
		}
		l.release()
	}
	if share := float64(small) / n; share > 0.01 {
		t.Errorf("the key of weight 1 got %.0f%% of the traffic next to two keys of weight 1e308", share*100)
	}
}
