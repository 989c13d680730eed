package main

import (
	"bytes"
	"errors"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/redistest"
)

func TestArrivalsArePoissonAndRepeatable(t *testing.T) {
	const rate, d = 200.0, 10 * time.Second
	a := arrivals(rate, d, 7)
	if !slices.Equal(a, arrivals(rate, d, 7)) {
		t.Error("the same seed gave different arrivals")
	}
	if slices.Equal(a, arrivals(rate, d, 8)) {
		t.Error("another seed gave the same arrivals")
	}
	if !slices.IsSorted(a) || a[0] < 0 || a[len(a)-1] >= d {
		t.Errorf("arrivals not sorted within [0, %v): first %v, last %v", d, a[0], a[len(a)-1])
	}
	// A Poisson count has a standard deviation of sqrt(mean).
	mean := rate * d.Seconds()
	if got := float64(len(a)); math.Abs(got-mean) > 5*math.Sqrt(mean) {
		t.Errorf("%v arrivals in %v at %v/s, want about %v", got, d, rate, mean)
	}
}

// The headline is the share of requests that succeeded, and every
// scenario is judged on the same requests over the same time: a setup
// that fails fast cannot finish early and look faster.
func TestEveryScenarioGetsTheSameRequests(t *testing.T) {
	inVirtualTime(t, testEveryScenarioGetsTheSameRequests)
}

func testEveryScenarioGetsTheSameRequests(t *testing.T) {
	rep := runJSON(t, quick...)
	cfg := rep.Config
	if want := math.Round(defaultLoad * cfg.capacity()); cfg.Rate != want {
		t.Errorf("default rate %v, want %v (%.1f× capacity)", cfg.Rate, want, defaultLoad)
	}
	if cfg.Requests == 0 {
		t.Fatal("no requests")
	}
	byName := map[string]*result{}
	for i, r := range rep.Results {
		if r.Name != cfg.Scenarios[i] {
			t.Errorf("result %d is %q, want %q", i, r.Name, cfg.Scenarios[i])
		}
		byName[r.Name] = r
		t.Logf("%-22s %5.1f%% of %d succeeded, %d upstream 429s, p99 %v", r.Name, 100*r.succeededShare(), r.Requests, r.Upstream429, r.P99)
		if r.Requests != cfg.Requests || r.Succeeded+r.Failed != r.Requests {
			t.Errorf("%s: %d requests = %d succeeded + %d failed; want the workload's %d", r.Name, r.Requests, r.Succeeded, r.Failed, cfg.Requests)
		}
		if r.UpstreamReq < r.Succeeded {
			t.Errorf("%s: upstream saw %d requests, fewer than the %d successes", r.Name, r.UpstreamReq, r.Succeeded)
		}
		// The timeline spans at least the arrivals, whenever the last
		// request finished, and adds up to the table.
		if n := len(r.Timeline); n == 0 || r.Timeline[n-1].T < cfg.Duration.Seconds() {
			t.Errorf("%s: timeline of %d bins ends before the %v of arrivals", r.Name, n, cfg.Duration)
		}
		var ok, failed float64
		for _, b := range r.Timeline {
			ok += b.OK * binWidth.Seconds()
			failed += b.Failed * binWidth.Seconds()
		}
		if int(math.Round(ok)) != r.Succeeded || int(math.Round(failed)) != r.Failed {
			t.Errorf("%s: timeline sums to %.0f ok, %.0f failed; table says %d, %d", r.Name, ok, failed, r.Succeeded, r.Failed)
		}
		sum := 0.0
		for _, s := range r.Shares {
			sum += s.Share
		}
		if r.Succeeded > 0 && math.Abs(sum-1) > 1e-9 {
			t.Errorf("%s: key shares add up to %v", r.Name, sum)
		}
	}
	// One key serves a third of the keys' capacity, which the arrivals
	// exceed: most of its requests fail, however fast the machine is.
	// keypool queues the excess of a short burst instead.
	single, kp := byName[scenarioSingle], byName[scenarioKeypool]
	if single.succeededShare() > 0.5 {
		t.Errorf("one key: %.1f%% succeeded with a third of the capacity, want under 50%%", 100*single.succeededShare())
	}
	if kp.succeededShare() < single.succeededShare()+0.3 {
		t.Errorf("keypool: %.1f%% succeeded, one key %.1f%%; want keypool far ahead", 100*kp.succeededShare(), 100*single.succeededShare())
	}
	if kp.Upstream429 > single.Upstream429/10 {
		t.Errorf("upstream 429s: keypool %d, one key %d; want keypool's far below", kp.Upstream429, single.Upstream429)
	}
}

func TestTableLeadsWithTheShareThatSucceeded(t *testing.T) {
	cfg := config{Keys: 2, Cap: 1, Rate: 10, Duration: time.Second, Deadline: time.Second, Latency: 100 * time.Millisecond, Requests: 10}
	results := []*result{
		{Name: "fails fast", Requests: 10, Succeeded: 1, Failed: 9, Shares: []keyShare{{"key 0", 1}, {"key 1", 0}}},
		{Name: "waits", Requests: 10, Succeeded: 10, Shares: []keyShare{{"key 0", .5}, {"key 1", .5}}},
	}
	var out bytes.Buffer
	writeTable(&out, cfg, results)
	table := out.String()
	if !regexp.MustCompile(`scenario\s+succeeded\s+requests\s+failed`).MatchString(table) {
		t.Errorf("table does not lead with succeeded:\n%s", table)
	}
	for _, want := range []string{"fails fast      10.0%", "waits     100.0%", "the same 10 requests", "within 1s of arriving"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, "goodput") || strings.Contains(table, "req/s  ") {
		t.Errorf("table has a rate column that is not over the same window for all:\n%s", table)
	}
}

// hang answers nothing: every request waits until its context ends.
type hang struct{}

func (hang) RoundTrip(req *http.Request) (*http.Response, error) {
	<-req.Context().Done()
	return nil, req.Context().Err()
}

// A request that is still waiting when its deadline passes counts as
// failed, and the run ends once every request has.
func TestRequestNotAnsweredByItsDeadlineFails(t *testing.T) {
	inVirtualTime(t, testRequestNotAnsweredByItsDeadlineFails)
}

func testRequestNotAnsweredByItsDeadlineFails(t *testing.T) {
	cfg := config{Keys: 1, Cap: 1, Rate: 100, Duration: 200 * time.Millisecond, Deadline: 50 * time.Millisecond}
	arr := arrivals(cfg.Rate, cfg.Duration, 1)
	sc := scenario{"hangs", func(env) (*http.Client, error) { return &http.Client{Transport: hang{}}, nil }}
	r, err := runScenario(sc, cfg, arr, newProgress(nil, false))
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != len(arr) || r.Failed != len(arr) || r.Succeeded != 0 {
		t.Errorf("%d arrivals: %d requests, %d failed, %d succeeded; want all failed", len(arr), r.Requests, r.Failed, r.Succeeded)
	}
}

func TestScenarioClientErrorIsReported(t *testing.T) {
	inVirtualTime(t, testScenarioClientErrorIsReported)
}

func testScenarioClientErrorIsReported(t *testing.T) {
	cfg := config{Keys: 1, Cap: 1, Rate: 100, Duration: 100 * time.Millisecond, Deadline: 50 * time.Millisecond}
	boom := errors.New("boom")
	sc := scenario{"broken", func(env) (*http.Client, error) { return nil, boom }}
	if _, err := runScenario(sc, cfg, arrivals(cfg.Rate, cfg.Duration, 1), newProgress(nil, false)); !errors.Is(err, boom) {
		t.Errorf("err = %v, want %v", err, boom)
	}
}

// Every scenario runs for the same -duration, so an outage inside it
// reaches every scenario: each one's upstream answered 503s, the one-key
// scenario uses the failing key, and every chart shades the window.
func TestOutageFallsInsideEveryScenario(t *testing.T) {
	inVirtualTime(t, testOutageFallsInsideEveryScenario)
}

func testOutageFallsInsideEveryScenario(t *testing.T) {
	htmlPath := filepath.Join(t.TempDir(), "sim.html")
	rep := runJSON(t, append(append([]string{}, quick...), "-outage", "1:500ms-1250ms", "-html", htmlPath)...)
	o := rep.Config.Outage
	if o == nil || o.Key == nil || *o.Key != 1 || o.Provider != "" || o.Start != 500*time.Millisecond || o.End != 1250*time.Millisecond {
		t.Fatalf("outage in the JSON config = %+v", o)
	}
	for _, r := range rep.Results {
		if r.Upstream5xx == 0 {
			t.Errorf("%s: no 503s from the upstream: the outage missed the run", r.Name)
		}
		if r.Name == scenarioSingle {
			if r.Shares[1].Share != 1 {
				t.Errorf("one key: shares %v, want all on key 1, the one with the outage", r.Shares)
			}
			// A request that finished in the window, later than the
			// slowest answer to one sent before it, failed.
			after := (o.Start + rep.Config.Latency + rep.Config.Jitter + 100*time.Millisecond).Seconds()
			checked := 0
			for _, b := range r.Timeline {
				if b.T-binWidth.Seconds() >= after && b.T <= o.End.Seconds() {
					checked++
					if b.OK > 0 {
						t.Errorf("one key: %v successes/s in the bin ending at %.2fs, inside the outage", b.OK, b.T)
					}
				}
			}
			if checked == 0 {
				t.Error("no bin inside the outage to check")
			}
		}
	}
	page, err := os.ReadFile(htmlPath)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(page), `class="outage"`); n != len(rep.Results) {
		t.Errorf("%d charts shade the outage, want %d", n, len(rep.Results))
	}
}

// With -replicas, replicas that share Redis keep the caps together,
// where replicas without a store do not.
func TestReplicasShareTheCaps(t *testing.T) {
	t.Parallel() // in real time: the store's Redis is reached over a socket
	rep := runJSON(t, append(append([]string{}, quick...), "-replicas", "3", "-duration", "300ms")...)
	for _, r := range rep.Results {
		if r.Name == replicasName(3, true) {
			if r.Upstream429 != 0 || r.Failed != 0 {
				t.Errorf("%s: %d upstream 429s, %d failed; want none", r.Name, r.Upstream429, r.Failed)
			}
			return
		}
	}
	t.Errorf("no %q row in %v", replicasName(3, true), rep.Config.Scenarios)
}

// -redis ADDR makes the replicas share a real redis-server instead of the
// embedded one; the sharing row keeps the caps all the same.
func TestReplicasShareARealRedis(t *testing.T) {
	t.Parallel() // in real time, as above
	r := redistest.Start(t)
	if !r.Real() {
		t.Skip("no redis-server: -redis needs a real one (KEYPOOL_REQUIRE_REDIS=1 makes this a failure)")
	}
	rep := runJSON(t, append(append([]string{}, quick...), "-replicas", "2", "-duration", "300ms", "-redis", r.Addr)...)
	if rep.Config.Redis != r.Addr {
		t.Errorf("the run's config names Redis %q, want %q", rep.Config.Redis, r.Addr)
	}
	for _, res := range rep.Results {
		if res.Name == replicasName(2, true) {
			if res.Upstream429 != 0 || res.Failed != 0 {
				t.Errorf("%s: %d upstream 429s, %d failed; want none", res.Name, res.Upstream429, res.Failed)
			}
			return
		}
	}
	t.Errorf("no %q row", replicasName(2, true))
}
