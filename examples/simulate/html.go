package main

import (
	"html/template"
	"io"
	"strings"
)

// writeHTML writes a self-contained page: the table and a chart per
// scenario. It loads nothing from elsewhere, so it opens offline.
func writeHTML(w io.Writer, cfg config, results []*result) error {
	var table strings.Builder
	writeTable(&table, cfg, results)
	maxT := cfg.Duration.Seconds()
	for _, r := range results {
		if n := len(r.Timeline); n > 0 {
			maxT = max(maxT, r.Timeline[n-1].T)
		}
	}
	var charts []template.HTML
	for _, r := range results {
		charts = append(charts, chart(r, cfg, maxT))
	}
	var outage string
	if cfg.Outage != nil {
		outage = "outage of " + cfg.Outage.label()
	}
	return page.Execute(w, struct {
		Table                                     string
		Charts                                    []template.HTML
		OK, OKB, Failed, Outage, Arrivals, BinDur string
		OutageLabel                               string // "" without an outage
		HasB                                      bool
	}{table.String(), charts, colorOK, colorOKB, colorFailed, colorOutage, colorArrivals, binWidth.String(), outage, cfg.Fallback != nil})
}

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>keypool simulation</title>
<style>body{font-family:system-ui,sans-serif;margin:1.5em;max-width:940px}pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:12px}
.legend span{display:inline-block;margin-right:1.5em}.sw{display:inline-block;width:.9em;height:.9em;vertical-align:middle;margin-right:.4em}
.dash{display:inline-block;width:1.6em;border-top:2px dashed;vertical-align:middle;margin-right:.4em}svg{display:block;margin-top:.6em}</style>
</head><body>
<h1>keypool simulation</h1>
<pre>{{.Table}}</pre>
<p>Requests finished per second, as the callers saw them, in {{.BinDur}} bins. Each chart has its own vertical scale; the time axis is the same for all.</p>
<p class="legend"><span><i class="sw" style="background:{{.OK}}"></i>succeeded{{if .HasB}} on provider A{{end}}</span>{{if .HasB}}<span><i class="sw ok-b" style="background:{{.OKB}}"></i>succeeded on provider B, the fallback</span>{{end}}<span><i class="sw" style="background:{{.Failed}}"></i>failed (error, or no answer by the deadline)</span><span><i class="dash" style="border-color:{{.Arrivals}}"></i>arrivals</span>{{if .OutageLabel}}<span><i class="sw" style="background:{{.Outage}}"></i>{{.OutageLabel}}</span>{{end}}</p>
{{range .Charts}}{{.}}
{{end}}</body></html>
`))
