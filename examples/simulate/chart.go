package main

import (
	"fmt"
	"html/template"
	"math"
	"strings"
)

// The chart's colours; the page's legend and its test use them too.
const (
	colorOK       = "#2a9d3a"
	colorOKB      = "#2b6cb0" // successes provider B served
	colorFailed   = "#d62828"
	colorOutage   = "#fbe3a6"
	colorArrivals = "#444444"
)

// The chart's size and its plot area's margins, in CSS pixels.
const (
	chartW, chartH         = 900.0, 240.0
	marginL, marginR       = 64.0, 16.0
	marginTop, marginBelow = 34.0, 26.0
	plotH                  = chartH - marginTop - marginBelow
)

// scale is a chart's vertical axis: 0 to top, a tick every step.
type scale struct{ top, step float64 }

// niceScale returns an axis that holds v, with at most five ticks above
// zero at round numbers (1, 2 or 5 times a power of ten).
func niceScale(v float64) scale {
	if v <= 0 {
		return scale{top: 1, step: 1}
	}
	raw := v / 5
	pow := math.Pow(10, math.Floor(math.Log10(raw)))
	step := 10 * pow
	for _, m := range []float64{1, 2, 5} {
		if m*pow >= raw {
			step = m * pow
			break
		}
	}
	return scale{top: step * math.Ceil(v/step), step: step}
}

// yScale is r's own vertical axis: it holds r's busiest bin and the
// arrival rate. Each chart has its own, so that a burst in one scenario
// does not flatten the others.
func yScale(r *result, rate float64) scale {
	v := rate
	for _, b := range r.Timeline {
		v = max(v, b.OK+b.Failed)
	}
	return niceScale(v)
}

// chart draws r's outcomes per second as stacked bars, successes below
// (provider A's, then provider B's) and failures above, over a time axis
// of maxT seconds that every chart shares, with the arrival rate as a
// dashed line and the outage shaded.
func chart(r *result, cfg config, maxT float64) template.HTML {
	ys := yScale(r, cfg.Rate)
	plotW := chartW - marginL - marginR
	x := func(t float64) float64 { return marginL + plotW*t/maxT }
	y := func(v float64) float64 { return marginTop + plotH*(1-v/ys.top) }
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="system-ui,sans-serif">`,
		chartW, chartH, chartW, chartH)
	fmt.Fprintf(&s, `<text x="%.0f" y="20" font-size="15"><tspan font-weight="bold">%s</tspan>: %.1f%% of %d requests succeeded`,
		marginL, template.HTMLEscapeString(r.Name), 100*r.succeededShare(), r.Requests)
	if r.ServedByB > 0 {
		fmt.Fprintf(&s, `, %d on provider B`, r.ServedByB)
	}
	fmt.Fprintf(&s, `; upstream sent %d 429s</text>`, r.Upstream429)
	if o := cfg.Outage; o != nil {
		x0, x1 := x(o.Start.Seconds()), x(min(o.End.Seconds(), maxT))
		fmt.Fprintf(&s, `<rect class="outage" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`, x0, marginTop, x1-x0, plotH, colorOutage)
		fmt.Fprintf(&s, `<text x="%.1f" y="%.1f" font-size="11" fill="#8a6d1c">outage of %s</text>`, x0+4, marginTop+12, o.label())
	}
	for v := 0.0; v <= ys.top+ys.step/2; v += ys.step {
		fmt.Fprintf(&s, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#e2e2e2"/>`, marginL, y(v), chartW-marginR, y(v))
		fmt.Fprintf(&s, `<text x="%.0f" y="%.1f" font-size="11" text-anchor="end">%s/s</text>`, marginL-6, y(v)+4, formatRate(v))
	}
	for _, b := range r.Timeline {
		drawBin(&s, b, x(b.T-binWidth.Seconds())+0.5, x(b.T)-0.5, y)
	}
	fmt.Fprintf(&s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1.5" stroke-dasharray="6 4"/>`,
		x(0), y(cfg.Rate), x(min(cfg.Duration.Seconds(), maxT)), y(cfg.Rate), colorArrivals)
	fmt.Fprintf(&s, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#888"/>`, marginL, y(0), chartW-marginR, y(0))
	tick := 1.0
	if maxT > 16 {
		tick = math.Ceil(maxT / 16)
	}
	for t := 0.0; t <= maxT+1e-9; t += tick {
		fmt.Fprintf(&s, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%gs</text>`, x(t), chartH-marginBelow+16, t)
	}
	s.WriteString(`</svg>`)
	return template.HTML(s.String())
}

// drawBin draws one bin's bar from x0 to x1, stacked from the axis up:
// successes on provider A, successes on provider B, failures.
func drawBin(s *strings.Builder, b bin, x0, x1 float64, y func(float64) float64) {
	segments := []struct {
		class, color string
		from, to     float64
	}{
		{"ok", colorOK, 0, b.OK - b.OKB},
		{"ok-b", colorOKB, b.OK - b.OKB, b.OK},
		{"failed", colorFailed, b.OK, b.OK + b.Failed},
	}
	for _, g := range segments {
		if g.to > g.from {
			fmt.Fprintf(s, `<rect class="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" shape-rendering="crispEdges"/>`,
				g.class, x0, y(g.to), x1-x0, y(g.from)-y(g.to), g.color)
		}
	}
}

// formatRate writes an axis label without needless decimals.
func formatRate(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%g", v)
}
