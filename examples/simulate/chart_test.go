package main

import (
	"context"
	"encoding/xml"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

func TestNiceScale(t *testing.T) {
	for _, c := range []struct{ v, top, step float64 }{
		{0, 1, 1}, {1, 1, 0.2}, {220, 250, 50}, {250, 250, 50}, {251, 300, 100}, {15494, 20000, 5000}, {0.3, 0.3, 0.1},
	} {
		got := niceScale(c.v)
		if d := got.top - c.top; d > 1e-9 || d < -1e-9 || got.step-c.step > 1e-9 || c.step-got.step > 1e-9 {
			t.Errorf("niceScale(%v) = %+v, want top %v step %v", c.v, got, c.top, c.step)
		}
		if got.top < c.v {
			t.Errorf("niceScale(%v) tops at %v, below the value", c.v, got.top)
		}
	}
}

// sampleRun is four results shaped like a real run's, with the burst that
// once flattened every chart: naive round robin failing 15,494 times in
// one second, next to keypool's 220 successes a second.
func sampleRun() (config, []*result) {
	cfg := config{Keys: 5, Cap: 8, Rate: 250, Duration: 8 * time.Second, Deadline: 3 * time.Second,
		Latency: 150 * time.Millisecond, Jitter: 50 * time.Millisecond, Requests: 2000,
		Outage: &outage{Key: ptr(2), Start: 3 * time.Second, End: 6 * time.Second}}
	timeline := func(f func(t float64) (ok, failed float64)) []bin {
		var bins []bin
		for i := 1; float64(i)*binWidth.Seconds() <= 10; i++ {
			t := float64(i) * binWidth.Seconds()
			ok, failed := f(t)
			bins = append(bins, bin{T: t, OK: ok, Failed: failed})
		}
		return bins
	}
	inOutage := func(t float64) bool { return t > 3 && t <= 6 }
	results := []*result{
		{Name: scenarioSingle, Requests: 2000, Succeeded: 360, Failed: 1640,
			Timeline: timeline(func(t float64) (float64, float64) { return 45, 205 })},
		{Name: scenarioNaive, Requests: 2000, Succeeded: 1600, Failed: 400, Upstream429: 15494,
			Timeline: timeline(func(t float64) (float64, float64) {
				if t == 0.5 {
					return 200, 15494
				}
				return 200, 50
			})},
		{Name: scenarioKeypool, Requests: 2000, Succeeded: 2000,
			Timeline: timeline(func(t float64) (float64, float64) {
				if inOutage(t) {
					return 120, 0
				}
				return 220, 0
			})},
		{Name: scenarioUnknown, Requests: 2000, Succeeded: 1980, Failed: 20,
			Timeline: timeline(func(t float64) (float64, float64) { return 210, 20 })},
	}
	return cfg, results
}

// Each chart's scale is its own: the naive run's burst does not flatten
// keypool's chart.
func TestEachChartHasItsOwnScale(t *testing.T) {
	cfg, results := sampleRun()
	tops := regexp.MustCompile(`>([0-9.]+)/s</text>`)
	for _, r := range results {
		want := yScale(r, cfg.Rate).top
		svg := string(chart(r, cfg, 10))
		if err := xml.Unmarshal([]byte(svg), new(struct{})); err != nil {
			t.Errorf("%s: chart is not well-formed SVG: %v", r.Name, err)
		}
		labels := tops.FindAllStringSubmatch(svg, -1)
		if len(labels) < 2 {
			t.Fatalf("%s: %d axis labels", r.Name, len(labels))
		}
		top, _ := strconv.ParseFloat(labels[len(labels)-1][1], 64)
		if top != want {
			t.Errorf("%s: axis tops at %v/s, want %v/s", r.Name, top, want)
		}
	}
	if top := yScale(results[2], cfg.Rate).top; top > 300 {
		t.Errorf("keypool's axis tops at %v/s for 220/s of successes", top)
	}
}

// chromium returns the path of the Chromium binary. Without one the test
// is skipped, unless KEYPOOL_REQUIRE_CHROMIUM=1 (as in CI) makes that a
// failure.
func chromium(t *testing.T) string {
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("KEYPOOL_REQUIRE_CHROMIUM") == "1" {
			t.Fatalf("KEYPOOL_REQUIRE_CHROMIUM=1 but chromium is not installed (%v); on Debian: apt-get install -y chromium", err)
		}
		t.Skipf("chromium is not installed (%v), so the page is not rendered; on Debian: apt-get install -y chromium (KEYPOOL_REQUIRE_CHROMIUM=1 makes this a failure)", err)
	}
	return path
}

// screenshot renders the page at path in headless Chromium.
func screenshot(t *testing.T, path string, width, height int) image.Image {
	bin := chromium(t)
	dir, err := os.MkdirTemp("", "simulate-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: Chromium's helpers may still be writing to the
	// profile as it exits, and a failed clean-up is not this test's point.
	defer os.RemoveAll(dir)
	shot := filepath.Join(dir, "shot.png")
	// A bound for a hung browser, not a timing assertion.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
		"--force-device-scale-factor=1", "--user-data-dir=" + filepath.Join(dir, "profile"),
		"--screenshot=" + shot, fmt.Sprintf("--window-size=%d,%d", width, height), "file://" + path}
	// At the lowest CPU priority, for the same reason the test runs last:
	// other packages' tests measure how a pool behaves under timing.
	cmd := exec.CommandContext(ctx, bin, args...)
	if nice, err := exec.LookPath("nice"); err == nil {
		cmd = exec.CommandContext(ctx, nice, append([]string{"-n", "19", bin}, args...)...)
	}
	cmd.WaitDelay = 10 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("chromium wrote no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func ptr[T any](v T) *T { return &v }

// rgb is a colour as the page writes it, #rrggbb.
type rgb [3]int

func hexRGB(s string) rgb {
	var c rgb
	fmt.Sscanf(s, "#%02x%02x%02x", &c[0], &c[1], &c[2])
	return c
}

// is reports whether the pixel at x, y has colour c, give or take a
// little for colour conversion.
func is(img image.Image, x, y int, c rgb) bool {
	r, g, b, _ := img.At(x, y).RGBA()
	d := func(v uint32, want int) int { return max(int(v>>8)-want, want-int(v>>8)) }
	return d(r, c[0]) <= 6 && d(g, c[1]) <= 6 && d(b, c[2]) <= 6
}

// band is a run of pixel rows in which a colour appears.
type band struct{ top, bottom int } // bottom exclusive

func (b band) height() int { return b.bottom - b.top }

// bands returns the runs of rows in which c appears in at least 3 pixels.
func bands(img image.Image, c rgb) []band {
	var out []band
	r := img.Bounds()
	in := false
	for y := r.Min.Y; y < r.Max.Y; y++ {
		n := 0
		for x := r.Min.X; x < r.Max.X && n < 3; x++ {
			if is(img, x, y, c) {
				n++
			}
		}
		switch {
		case n >= 3 && !in:
			out, in = append(out, band{top: y}), true
		case n < 3 && in:
			out[len(out)-1].bottom, in = y, false
		}
	}
	if in {
		out[len(out)-1].bottom = r.Max.Y
	}
	return out
}

// The page, as a browser draws it: successes reach well up each chart
// whose scale is its own, failures show, and keypool's dip during the
// outage shows under the shaded window.
func TestChartRendersReadablyInChromium(t *testing.T) {
	// Parallel makes this test wait until the package's other tests are
	// done, so the browser starts last. The library's adaptive-limit tests
	// in the root package, which go test runs alongside from its start,
	// fail when a browser starts beside them on a 2-core machine.
	t.Parallel()
	cfg, results := sampleRun()
	path := filepath.Join(t.TempDir(), "sim.html")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeHTML(f, cfg, results); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	img := screenshot(t, path, 1200, 600+int(chartH+20)*len(results))
	if os.Getenv("KEYPOOL_KEEP_SCREENSHOT") != "" {
		keep, _ := os.Create(os.Getenv("KEYPOOL_KEEP_SCREENSHOT"))
		png.Encode(keep, img)
		keep.Close()
	}

	// Rows where the success colour appears, top to bottom: the legend's
	// swatch, then one band per chart, as tall as its highest bar.
	// keypool's 220/s on a 250/s axis and the learning run's 210/s reach
	// most of the way up; on a shared axis topped by the naive run's
	// 15,494/s they would be 2 px high.
	var tall []band
	for _, b := range bands(img, hexRGB(colorOK)) {
		if b.height() >= int(plotH/2) {
			tall = append(tall, b)
		}
	}
	if len(tall) != 2 {
		t.Fatalf("success bars reach half-way up %d charts, want 2 (keypool's two): bands %v", len(tall), bands(img, hexRGB(colorOK)))
	}
	// One key's failures fill most of its chart above its successes.
	redTall := 0
	for _, b := range bands(img, hexRGB(colorFailed)) {
		if b.height() >= int(plotH/2) {
			redTall++
		}
	}
	if redTall < 1 {
		t.Errorf("no chart shows failures over half its height: bands %v", bands(img, hexRGB(colorFailed)))
	}

	// keypool's chart: during the outage its bars are lower (120/s of
	// 250), and the shading shows above them; elsewhere they are 220/s.
	kp := tall[0]
	y := kp.bottom - int(0.7*float64(kp.height())) // above 120/s, below 220/s
	full, dipped := 0, 0
	for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
		switch {
		case is(img, x, y, hexRGB(colorOK)):
			full++
		case is(img, x, y, hexRGB(colorOutage)) && is(img, x, kp.bottom-3, hexRGB(colorOK)):
			dipped++
		}
	}
	// The outage is 3 of the 10 seconds across an 820 px axis.
	if full < 300 || dipped < 150 {
		t.Errorf("at row %d of keypool's chart: %d px of full bars, %d px of lower bars under the shading; want both", y, full, dipped)
	}
}

// With provider A down, the fallback chart shows B's successes in B's
// colour, under the shaded window and nowhere else.
func TestFallbackChartShowsProviderBInChromium(t *testing.T) {
	t.Parallel() // after the package's other tests; see above
	cfg, _ := sampleRun()
	cfg.Outage = &outage{Provider: providerA, Start: 3 * time.Second, End: 6 * time.Second}
	cfg.Fallback = newFallback(cfg)
	var bins []bin
	for i := 1; float64(i)*binWidth.Seconds() <= 10; i++ {
		t := float64(i) * binWidth.Seconds()
		b := bin{T: t, OK: 220}
		if t > 3 && t <= 6 {
			b.OKB = 220
		}
		bins = append(bins, b)
	}
	r := &result{Name: scenarioFallback, Requests: 2200, Succeeded: 2200, ServedByB: 660, Timeline: bins}
	path := filepath.Join(t.TempDir(), "sim.html")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeHTML(f, cfg, []*result{r}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	img := screenshot(t, path, 1200, 600+int(chartH+20))

	blue := hexRGB(colorOKB)
	var tall []band
	for _, b := range bands(img, blue) {
		if b.height() >= int(plotH/2) {
			tall = append(tall, b)
		}
	}
	if len(tall) != 1 {
		t.Fatalf("provider B's bars reach half-way up %d charts, want 1: bands %v", len(tall), bands(img, blue))
	}
	// Along a row through B's bars: B's colour for the 3 s of outage, A's
	// on either side (an 820 px axis for 10 s: about 250 px and 500 px).
	y := (tall[0].top + tall[0].bottom) / 2
	onB, onA := 0, 0
	for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
		switch {
		case is(img, x, y, blue):
			onB++
		case is(img, x, y, hexRGB(colorOK)):
			onA++
		}
	}
	if onB < 200 || onB > 300 || onA < 400 {
		t.Errorf("at row %d: %d px of provider B, %d px of provider A; want about 250 and 500", y, onB, onA)
	}
}
