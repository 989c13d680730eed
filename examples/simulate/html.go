package main

import (
	"fmt"
	"html/template"
	"io"
	"strings"
)

// writeHTML writes a self-contained page: the table and, per scenario, an
// SVG chart of successes, caller errors and upstream 429s per second.
func writeHTML(w io.Writer, cfg config, results []*result) error {
	var table strings.Builder
	writeTable(&table, cfg, results)
	maxRate, maxT := 1.0, 1.0
	for _, r := range results {
		for _, b := range r.Timeline {
			maxRate = max(maxRate, b.OK, b.Errors, b.Upstream429)
			maxT = max(maxT, b.T)
		}
	}
	var charts []template.HTML
	for _, r := range results {
		charts = append(charts, chart(r, maxT, maxRate))
	}
	return page.Execute(w, struct {
		Table  string
		Charts []template.HTML
	}{table.String(), charts})
}

const chartW, chartH, pad = 900.0, 220.0, 40.0

// chart draws one scenario's timeline; every chart shares the same axes
// so that the scenarios compare at a glance.
func chart(r *result, maxT, maxRate float64) template.HTML {
	x := func(t float64) float64 { return pad + (chartW-2*pad)*t/maxT }
	y := func(v float64) float64 { return chartH - pad - (chartH-2*pad)*v/maxRate }
	line := func(get func(bin) float64, color string) string {
		var pts strings.Builder
		fmt.Fprintf(&pts, "%.1f,%.1f ", x(0), y(0))
		for _, b := range r.Timeline {
			fmt.Fprintf(&pts, "%.1f,%.1f ", x(b.T), y(get(b)))
		}
		return fmt.Sprintf(`<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, color, pts.String())
	}
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f">`, chartW, chartH, chartW, chartH)
	fmt.Fprintf(&s, `<text x="%.0f" y="20" font-weight="bold">%s</text>`, pad, template.HTMLEscapeString(r.Name))
	fmt.Fprintf(&s, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#888"/>`, pad, chartH-pad, chartW-pad, chartH-pad)
	fmt.Fprintf(&s, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#888"/>`, pad, pad, pad, chartH-pad)
	fmt.Fprintf(&s, `<text x="4" y="%.0f" font-size="11">%.0f/s</text>`, pad+4, maxRate)
	fmt.Fprintf(&s, `<text x="%.0f" y="%.0f" font-size="11" text-anchor="end">%.0fs</text>`, chartW-pad, chartH-pad+16, maxT)
	s.WriteString(line(func(b bin) float64 { return b.OK }, "#2a9d3a"))
	s.WriteString(line(func(b bin) float64 { return b.Errors }, "#d62828"))
	s.WriteString(line(func(b bin) float64 { return b.Upstream429 }, "#f4a261"))
	s.WriteString(`</svg>`)
	return template.HTML(s.String())
}

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>keypool simulation</title>
<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:960px}pre{background:#f6f6f6;padding:1em;overflow-x:auto}
.legend span{display:inline-block;margin-right:1.5em}.sw{display:inline-block;width:1em;height:.3em;vertical-align:middle;margin-right:.4em}</style>
</head><body>
<h1>keypool simulation</h1>
<pre>{{.Table}}</pre>
<p class="legend"><span><i class="sw" style="background:#2a9d3a"></i>successes/s</span><span><i class="sw" style="background:#d62828"></i>errors seen by callers/s</span><span><i class="sw" style="background:#f4a261"></i>429s sent by the upstream/s</span></p>
{{range .Charts}}<div>{{.}}</div>{{end}}
</body></html>
`))
