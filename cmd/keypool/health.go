package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/keypool/keypool"
)

// healthReport is the body of GET /healthz.
type healthReport struct {
	Status string `json:"status"` // "ok" or "unavailable"
	Reason string `json:"reason,omitempty"`
	// Keys counts the keys in the pool; Serving those that can serve:
	// every key that is neither disabled nor ejected. A cooling key
	// counts, as it serves again within seconds; so does a probing key.
	Keys    int `json:"keys"`
	Serving int `json:"keys_serving"`
	// InFlight counts requests holding a key, streams included, until
	// their answer is read to the end or abandoned.
	InFlight int `json:"in_flight"`
}

// healthHandler answers 200 while at least one key can serve, and 503
// with the reason otherwise.
func healthHandler(pool *keypool.Pool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeAPIError(w, http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed", "Use GET /healthz.")
			return
		}
		rep, status := health(pool.Stats())
		body, _ := json.Marshal(rep)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		w.Write(append(body, '\n'))
	})
}

func health(stats []keypool.KeyStats) (healthReport, int) {
	rep := healthReport{Status: "ok", Keys: len(stats)}
	var back time.Time // when the first disabled or ejected key is probed again
	for _, st := range stats {
		rep.InFlight += st.InFlight
		if st.State != keypool.StateDisabled && st.State != keypool.StateEjected {
			rep.Serving++
		} else if back.IsZero() || st.DisabledUntil.Before(back) {
			back = st.DisabledUntil
		}
	}
	if rep.Serving > 0 {
		return rep, http.StatusOK
	}
	rep.Status = "unavailable"
	rep.Reason = fmt.Sprintf("all %d keys are disabled (refused, out of balance or quota) or ejected (failing)", rep.Keys)
	if time.Until(back) < 24*time.Hour { // not disabled by hand, which is forever
		rep.Reason += "; the first is tried again at " + back.UTC().Format(time.RFC3339)
	}
	return rep, http.StatusServiceUnavailable
}
