package keypool

import (
	"math"
	"slices"
)

// buildSchedule lays the keys out on a cycle of slots in proportion to
// their weights, each key's slots evenly spread, so that walking the cycle
// with one atomic counter is a smooth weighted round robin: in any window
// each key's share is within a slot or two of its weight. Picking is O(1)
// and lock-free; the cycle is rebuilt only when the keys change.
//
// The cycle has about 16 slots per key (at least 256, at most 2^17, never
// fewer than one per key), so shares are exact to about 1/(16n) and every
// key gets at least one slot however small its weight.
func buildSchedule(weights []float64) []int32 {
	n := len(weights)
	size := max(min(16*n, 1<<17), 256, n)
	// Relative to the largest weight, so that huge weights cannot
	// overflow the sum.
	largest := 0.0
	for _, w := range weights {
		largest = max(largest, w)
	}
	total := 0.0
	for _, w := range weights {
		total += w / largest
	}
	type slot struct {
		at  float64 // position on the cycle, in [0, 1)
		key int32
	}
	slots := make([]slot, 0, size+n)
	for i, w := range weights {
		c := max(1, int(math.Round(w/largest/total*float64(size))))
		for j := range c {
			slots = append(slots, slot{at: (float64(j) + 0.5) / float64(c), key: int32(i)})
		}
	}
	slices.SortFunc(slots, func(a, b slot) int {
		if a.at != b.at {
			if a.at < b.at {
				return -1
			}
			return 1
		}
		return int(a.key - b.key)
	})
	out := make([]int32, len(slots))
	for i, s := range slots {
		out[i] = s.key
	}
	return out
}
