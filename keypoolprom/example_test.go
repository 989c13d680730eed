package keypoolprom_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/keypoolprom"
)

// ExampleNewCollector registers a pool's metrics and serves them, as a
// service's /metrics handler does.
func ExampleNewCollector() {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"choices":[{"message":{"content":"Hello"}}]}`)
	}))
	defer upstream.Close()

	pool, err := keypool.New([]keypool.Key{{Secret: "sk-example-aaaaaaaaaaaa1111"}})
	if err != nil {
		log.Fatal(err)
	}
	registry := prometheus.NewRegistry()
	registry.MustRegister(keypoolprom.NewCollector(pool))
	metrics := httptest.NewServer(promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	defer metrics.Close()

	client := &http.Client{Transport: keypool.NewTransport(pool)}
	resp, err := client.Post(upstream.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m"}`))
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()

	scrape, err := http.Get(metrics.URL)
	if err != nil {
		log.Fatal(err)
	}
	defer scrape.Body.Close()
	text, _ := io.ReadAll(scrape.Body)
	for _, line := range strings.Split(string(text), "\n") {
		if strings.HasPrefix(line, "keypool_upstream_requests_total") || strings.HasPrefix(line, "keypool_key_state") && strings.HasSuffix(line, " 1") {
			fmt.Println(line)
		}
	}
	// Output:
	// keypool_key_state{key="sk-…1111",state="ready"} 1
	// keypool_upstream_requests_total{key="sk-…1111",outcome="ok"} 1
}
