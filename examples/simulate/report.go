package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

func writeTable(w io.Writer, cfg config, results []*result) {
	fmt.Fprintf(w, "Simulated DeepSeek: %d accounts, each allows %d requests in flight and answers 429 over that (no Retry-After).\n",
		cfg.Keys, cfg.Cap)
	fmt.Fprintf(w, "Workload: %d callers sending back to back; latency %v + up to %v", cfg.Callers, cfg.Latency, cfg.Jitter)
	if cfg.Requests > 0 {
		fmt.Fprintf(w, "; %d requests per scenario", cfg.Requests)
	} else {
		fmt.Fprintf(w, "; %v per scenario", cfg.Duration)
	}
	if o := cfg.Outage; o != nil {
		fmt.Fprintf(w, "; key %d answers 503 from %v to %v", o.Key, o.Start, o.End)
	}
	fmt.Fprintf(w, ".\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\trequests\tsucceeded\tcaller errors\tupstream 429s\tgoodput req/s\tp50\tp99\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%.1f\t%s\t%s\t\n", r.Name, r.Requests, r.Succeeded, r.Errors, r.Upstream429,
			r.Goodput, ms(r.P50), ms(r.P99))
	}
	tw.Flush()
	fmt.Fprintln(w, "\nShare of successful requests per key:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := []string{"scenario"}
	for _, s := range results[0].Shares {
		header = append(header, s.Key)
	}
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	for _, r := range results {
		row := []string{r.Name}
		for _, s := range r.Shares {
			row = append(row, fmt.Sprintf("%.1f%%", 100*s.Share))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	tw.Flush()
	capacity := float64(cfg.Keys*cfg.Cap) / (cfg.Latency + cfg.Jitter/2).Seconds()
	fmt.Fprintf(w, "\nThe keys' aggregate capacity is about %.0f req/s (%d slots / %v mean latency).\n",
		capacity, cfg.Keys*cfg.Cap, cfg.Latency+cfg.Jitter/2)
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond))
}

func writeJSON(w io.Writer, cfg config, results []*result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		Config  config    `json:"config"`
		Results []*result `json:"results"`
	}{cfg, results})
}
