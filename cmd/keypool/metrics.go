package main

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"

	"github.com/keypool/keypool"
)

// metricsHandler serves Pool.Stats in the Prometheus text format, one
// series per key, labelled with the key's name (its masked secret unless
// named), which holds no secret.
//
// LATER: this file is a stand-in. When keypoolprom exists, replace it with
// a prometheus.Registry holding keypoolprom.NewCollector(pool), served by
// promhttp.HandlerFor; server.go routes /metrics to whatever this returns.
func metricsHandler(pool *keypool.Pool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		bw := bufio.NewWriter(w)
		writeMetrics(bw, pool.Stats())
		bw.Flush()
	})
}

var allStates = []keypool.State{
	keypool.StateReady, keypool.StateProbing, keypool.StateCooling, keypool.StateEjected, keypool.StateDisabled,
}

func writeMetrics(w *bufio.Writer, stats []keypool.KeyStats) {
	family := func(name, typ, help string, value func(keypool.KeyStats) int64) {
		w.WriteString("# HELP " + name + " " + help + "\n# TYPE " + name + " " + typ + "\n")
		for _, st := range stats {
			w.WriteString(name + `{key="` + escapeLabel(st.Name) + `"} ` + strconv.FormatInt(value(st), 10) + "\n")
		}
	}
	family("keypool_key_in_flight", "gauge", "Requests holding the key: sent and not yet read to the end or closed.",
		func(s keypool.KeyStats) int64 { return int64(s.InFlight) })
	family("keypool_key_limit", "gauge", "The in-flight limit of the key's account, set or learned; 0 means none.",
		func(s keypool.KeyStats) int64 { return int64(s.Limit) })
	family("keypool_key_requests_total", "counter", "Attempts sent with the key.",
		func(s keypool.KeyStats) int64 { return s.Requests })
	family("keypool_key_successes_total", "counter", "Attempts answered with a 2xx.",
		func(s keypool.KeyStats) int64 { return s.Successes })
	family("keypool_key_rate_limited_total", "counter", "Attempts answered with a 429.",
		func(s keypool.KeyStats) int64 { return s.RateLimited })
	family("keypool_key_failures_total", "counter", "Attempts refused for the key or account, or failed at the provider.",
		func(s keypool.KeyStats) int64 { return s.Failures })
	family("keypool_key_tokens_total", "counter", "Tokens the upstream reported using.",
		func(s keypool.KeyStats) int64 { return s.Tokens })

	w.WriteString("# HELP keypool_key_state The key's state: 1 for the state it is in, 0 for the others.\n# TYPE keypool_key_state gauge\n")
	for _, st := range stats {
		for _, s := range allStates {
			v := "0"
			if st.State == s {
				v = "1"
			}
			w.WriteString(`keypool_key_state{key="` + escapeLabel(st.Name) + `",state="` + s.String() + `"} ` + v + "\n")
		}
	}
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escapeLabel(s string) string { return labelEscaper.Replace(s) }
