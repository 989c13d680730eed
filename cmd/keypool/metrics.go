package main

import (
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/keypoolprom"
)

// newMetrics returns the registry that /metrics serves: the pool's
// metrics, as package keypoolprom names them, and the Go runtime's and
// the process's (memory, goroutines, GC, CPU, open files). A Go service
// that embeds keypool has the last two in its own registry already; the
// sidecar is a process of its own, and this is the only registry it has.
//
// The pool stays the same object for the life of the process (SIGHUP
// changes its keys in place), so the collector follows its keys through
// reloads: the gauges and the token counter list the keys in the pool
// at each scrape.
func newMetrics(pool *keypool.Pool) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		keypoolprom.NewCollector(pool),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// metricsHandler serves reg in the format the scraper asks for, the
// Prometheus text format by default. A metric that fails to gather is
// logged and left out rather than failing the scrape.
func metricsHandler(reg *prometheus.Registry, log *slog.Logger) http.Handler {
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      reg, // counts its own errors in promhttp_metric_handler_errors_total
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}
