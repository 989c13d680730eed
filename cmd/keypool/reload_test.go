package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeupstream"
)

func names(p *testProxy) []string {
	var out []string
	for _, st := range p.pool.Stats() {
		out = append(out, st.Name)
	}
	return out
}

// chatLoad keeps callers sending chat requests to a proxy, every fourth
// streamed, until it is ended; any answer but a good 200 fails the test.
type chatLoad struct {
	ok, failed atomic.Int64
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startChatLoad(t *testing.T, p *testProxy, callers int) *chatLoad {
	l := &chatLoad{stop: make(chan struct{})}
	for range callers {
		l.wg.Add(1)
		go l.call(t, p)
	}
	return l
}

func (l *chatLoad) call(t *testing.T, p *testProxy) {
	defer l.wg.Done()
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		body := chatBody
		if l.ok.Load()%4 == 0 {
			body = streamBody
		}
		status, answer := p.chat(t, body)
		if status == 200 && (strings.Contains(answer, "Hello from the simulator") || strings.Contains(answer, "[DONE]")) {
			l.ok.Add(1)
		} else {
			l.failed.Add(1)
			t.Errorf("status %d: %.300s", status, answer)
		}
	}
}

// served waits for n more requests to be served.
func (l *chatLoad) served(t *testing.T, n int64) {
	t.Helper()
	target := l.ok.Load() + n
	waitFor(t, 20*time.Second, "requests to be served", func() bool { return l.ok.Load() >= target })
}

func (l *chatLoad) end() {
	close(l.stop)
	l.wg.Wait()
}

func TestReloadUnderLoad(t *testing.T) {
	sim := startSim(t, fakeupstream.Config{Keys: simKeys(keyA, keyB, keyC, keyD), Latency: 2 * time.Millisecond})
	file := filepath.Join(t.TempDir(), "keys")
	writeFile(t, file, keyA+"\n"+keyB+"\n")
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS_FILE": file, "KEYPOOL_UPSTREAM": sim.URL, "KEYPOOL_TOKENS": token})

	load := startChatLoad(t, p, 8)
	reloadTo := func(list string, want ...string) {
		t.Helper()
		writeFile(t, file, list)
		p.signals <- syscall.SIGHUP
		waitFor(t, 10*time.Second, "the reload", func() bool { return slices.Equal(names(p), want) })
		load.served(t, 50)
	}
	load.served(t, 50)
	reloadTo(keyB+"\n"+keyC+";weight=2\n", "sk-test-…0002", "sk-test-…0003")
	aAfter := sim.Counters(keyA).Requests
	reloadTo(keyC+";max=2\n"+keyD+";name=dee\n", "sk-test-…0003", "dee")
	bAfter := sim.Counters(keyB).Requests
	reloadTo(keyC+";max=2;models=deepseek-chat\n"+keyD+";name=dee;weight=3\n", "dee", "sk-test-…0003") // C replaced: models changed

	// A bad list is refused and the keys stay.
	writeFile(t, file, keyA+";sk-oops\n")
	p.signals <- syscall.SIGHUP
	waitFor(t, 10*time.Second, "the refusal to be logged", func() bool { return strings.Contains(p.logs.String(), "reload refused") })
	load.served(t, 50)
	load.end()

	if load.failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during reloads", load.failed.Load(), load.ok.Load()+load.failed.Load())
	}
	if got := names(p); !slices.Equal(got, []string{"dee", "sk-test-…0003"}) {
		t.Errorf("keys after the refused reload: %v", got)
	}
	if sim.Counters(keyA).Requests != aAfter || sim.Counters(keyB).Requests != bAfter {
		t.Errorf("removed keys still used: A %d→%d, B %d→%d", aAfter, sim.Counters(keyA).Requests, bAfter, sim.Counters(keyB).Requests)
	}
	checkReloadedKeys(t, p, sim)
}

// checkReloadedKeys checks that the keys TestReloadUnderLoad added
// served, and that C keeps the limit its last reload gave it.
func checkReloadedKeys(t *testing.T, p *testProxy, sim *fakeupstream.Server) {
	if sim.Counters(keyC).OK == 0 || sim.Counters(keyD).OK == 0 {
		t.Errorf("added keys unused: C %d, D %d answers", sim.Counters(keyC).OK, sim.Counters(keyD).OK)
	}
	for _, st := range p.pool.Stats() {
		if st.Name == "sk-test-…0003" && st.Limit > 2 {
			t.Errorf("C's limit is %d, want at most max=2", st.Limit)
		}
	}
	waitFor(t, 5*time.Second, "slots to be free", func() bool { return p.inFlight() == 0 })
}

func TestReloadRefusesBadLists(t *testing.T) {
	sim := startSim(t, fakeupstream.Config{Keys: simKeys(keyA, keyB)})
	file := filepath.Join(t.TempDir(), "keys")
	writeFile(t, file, keyA+";max=4\n")
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS_FILE": file, "KEYPOOL_UPSTREAM": sim.URL, "KEYPOOL_TOKENS": token})
	for name, list := range map[string]string{
		"empty":                     "# nothing\n",
		"syntax":                    keyA + ";" + keyB,
		"unknown option":            keyA + ";colour=blue",
		"negative weight":           keyA + ";weight=-1",
		"duplicate":                 keyA + "\n" + keyA,
		"bad base URL":              keyA + ";base=ftp://example.com",
		"token as key":              keyA + "\n" + token,
		"account limits disagree":   keyA + ";account=t;max=1\n" + keyB + ";account=t;max=2",
		"the only key replaced":     keyA + ";name=renamed",
		"white space in the secret": keyA + "x y",
	} {
		t.Run(name, func(t *testing.T) {
			writeFile(t, file, list)
			_, err := p.reload()
			if err == nil {
				t.Fatal("reload accepted it")
			}
			assertNoSecrets(t, "reload error", err.Error(), keyA, keyB, token)
			if got := names(p); !slices.Equal(got, []string{"sk-test-…0001"}) || p.pool.Stats()[0].Limit > 4 {
				t.Errorf("keys changed to %v", p.pool.Stats())
			}
		})
	}
	writeFile(t, file, keyA+";max=4\n")
	if _, err := p.reload(); err != nil {
		t.Fatalf("the good list again: %v", err)
	}
	if status, body := p.chat(t, chatBody); status != 200 {
		t.Errorf("status %d: %s", status, body)
	}
	// The file gone: refused too.
	writeFile(t, file, "")
	if _, err := p.reload(); err == nil {
		t.Error("an empty file was accepted")
	}
}

func TestReloadWithoutUpstreamNeedsBaseURL(t *testing.T) {
	up := startRecorder(t)
	file := filepath.Join(t.TempDir(), "keys")
	writeFile(t, file, keyA+";base="+up.URL)
	p := startProxy(t, map[string]string{"KEYPOOL_KEYS_FILE": file})
	writeFile(t, file, keyA+";base="+up.URL+"\n"+keyB)
	if _, err := p.reload(); err == nil || !strings.Contains(err.Error(), "KEYPOOL_UPSTREAM") {
		t.Errorf("err = %v, want a refusal naming KEYPOOL_UPSTREAM", err)
	}
	if status, _ := p.chat(t, chatBody); status != 200 || len(up.requests()) != 1 {
		t.Errorf("status %d, %d requests to the key's base", status, len(up.requests()))
	}
}

func entriesOf(keys ...keypool.Key) []keyEntry {
	p, err := keypool.New(keys)
	if err != nil {
		panic(err)
	}
	stats := p.Stats()
	out := make([]keyEntry, len(keys))
	for i, k := range keys {
		out[i] = keyEntry{key: k, name: stats[i].Name}
	}
	return out
}

func TestPlanReload(t *testing.T) {
	a := keypool.Key{Secret: keyA}
	b := keypool.Key{Secret: keyB, Account: "team", MaxConcurrent: 4}
	c := keypool.Key{Secret: keyC, Account: "team"}
	d := keypool.Key{Secret: keyD}
	with := func(k keypool.Key, f func(*keypool.Key)) keypool.Key { f(&k); return k }
	cases := []struct {
		name string
		old  []keypool.Key
		next []keypool.Key
		want string // the plan, summarized
	}{
		{"unchanged", []keypool.Key{a, b, c}, []keypool.Key{a, b, c}, ""},
		{"weight 0 is 1", []keypool.Key{a}, []keypool.Key{with(a, func(k *keypool.Key) { k.Weight = 1 })}, ""},
		{"add and remove", []keypool.Key{a, b}, []keypool.Key{a, d}, "add=1 gone=[sk-test-…0002]"},
		{"weight", []keypool.Key{a}, []keypool.Key{with(a, func(k *keypool.Key) { k.Weight = 3 })}, "weights=[{sk-test-…0001 3}]"},
		{"own limits", []keypool.Key{a, d}, []keypool.Key{a, with(d, func(k *keypool.Key) { k.RPM = 60 })}, "limits=[{sk-test-…0004 {60 0 0}}]"},
		{"account limits, once", []keypool.Key{a, b, c}, []keypool.Key{a, with(b, func(k *keypool.Key) { k.MaxConcurrent = 8 }), c},
			"limits=[{sk-test-…0002 {0 0 8}}]"},
		{"account limits set by a new key", []keypool.Key{a, c}, []keypool.Key{a, c, b}, "limits=[{sk-test-…0003 {0 0 4}}] add=1"},
		{"name changes: replaced", []keypool.Key{a, d}, []keypool.Key{a, with(d, func(k *keypool.Key) { k.Name = "dee" })}, "replaced=[sk-test-…0004]"},
		{"account changes: replaced", []keypool.Key{a, d}, []keypool.Key{a, with(d, func(k *keypool.Key) { k.Account = "x" })}, "replaced=[sk-test-…0004]"},
		{"models change: replaced", []keypool.Key{a, d}, []keypool.Key{a, with(d, func(k *keypool.Key) { k.Models = []string{"m"} })}, "replaced=[sk-test-…0004]"},
		{"every key replaced, one added", []keypool.Key{a}, []keypool.Key{with(a, func(k *keypool.Key) { k.Name = "x" }), d}, "add=1 replaced=[sk-test-…0001]"},
		{"every key replaced", []keypool.Key{a}, []keypool.Key{with(a, func(k *keypool.Key) { k.Name = "x" })}, "error"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			plan, err := planReload(entriesOf(c.old...), c.next)
			got := "error"
			if err == nil {
				got = summarize(plan)
			}
			if got != c.want {
				t.Errorf("plan %q, want %q", got, c.want)
			}
			if err != nil {
				return
			}
			checkApply(t, plan, c.old, c.next)
		})
	}
}

// checkApply checks that plan, carried out on a pool of the old keys,
// gives a pool with the next keys, under the names its entries say.
func checkApply(t *testing.T, plan *reloadPlan, old, next []keypool.Key) {
	t.Helper()
	pool, _ := keypool.New(old)
	entries, err := plan.apply(pool, entriesOf(old...))
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	var secrets []string
	for i, st := range pool.Stats() {
		if entries[i].name != st.Name {
			t.Errorf("entry %d is %s, the pool's key %s", i, entries[i].name, st.Name)
		}
		secrets = append(secrets, entries[i].key.Secret)
	}
	var want []string
	for _, k := range next {
		want = append(want, k.Secret)
	}
	slices.Sort(secrets)
	slices.Sort(want)
	if !slices.Equal(secrets, want) {
		t.Errorf("pool holds %d keys, want %d", len(secrets), len(want))
	}
}

func summarize(p *reloadPlan) string {
	var parts []string
	add := func(name string, v any, n int) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%s=%v", name, v))
		}
	}
	add("limits", p.limits, len(p.limits))
	add("weights", p.weights, len(p.weights))
	add("add", len(p.add), len(p.add))
	add("gone", p.gone, len(p.gone))
	add("replaced", p.replaced, len(p.replaced))
	return strings.Join(parts, " ")
}
