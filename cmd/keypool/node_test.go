package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/fakeupstream"
)

// TestNodeClient drives the built binary with the official openai Node
// client (nodetest/client.mjs, version pinned in nodetest/package-lock.json):
// 200 requests, 40 at a time, every fifth streaming; a stream aborted
// with an AbortController; a bad token. The script checks every answer,
// that /healthz shows no request in flight after the abort, and that the
// bad token gets a 401; this test checks that the simulator never
// finished the aborted stream, so its upstream request was cancelled.
//
// Without node, or without `npm ci` run in nodetest, the test is skipped,
// or fails when KEYPOOL_REQUIRE_NODE=1 (as in CI).
func TestNodeClient(t *testing.T) {
	missing := func(why string) {
		t.Helper()
		if os.Getenv("KEYPOOL_REQUIRE_NODE") == "1" {
			t.Fatalf("%s, and KEYPOOL_REQUIRE_NODE=1", why)
		}
		t.Skipf("%s; set KEYPOOL_REQUIRE_NODE=1 to make this a failure", why)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node is not installed")
	}
	dir, err := filepath.Abs("nodetest")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai", "package.json")); err != nil {
		missing("the openai package is not installed: run `npm ci` in cmd/keypool/nodetest")
	}

	const chunks = 40
	sim := startSim(t, fakeupstream.Config{
		Keys:         simKeys(keyA, keyB, keyC),
		Accounts:     map[string]fakeupstream.Account{keyA: {MaxInFlight: 8}, keyB: {MaxInFlight: 8}, keyC: {MaxInFlight: 8}},
		Latency:      20 * time.Millisecond,
		Jitter:       10 * time.Millisecond,
		StreamChunks: chunks,
		ChunkEvery:   25 * time.Millisecond, // a stream lasts a second unless aborted
	})
	// Two keys are told their cap; the third learns it.
	c := startChild(t, "KEYPOOL_KEYS="+keyA+";max=8,"+keyB+";max=8,"+keyC, "KEYPOOL_UPSTREAM="+sim.URL, "KEYPOOL_TOKENS="+token)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "KEYPOOL_URL=http://"+c.addr, "KEYPOOL_TOKEN="+token, fmt.Sprintf("STREAM_CHUNKS=%d", chunks))
	out, err := cmd.CombinedOutput()
	t.Logf("node: %s", strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("node client.mjs: %v", err)
	}
	// 200 answers and never the aborted stream's end.
	if tot := sim.Total(); tot.OK != 200 {
		t.Errorf("the simulator completed %d requests, want 200: the aborted stream ran to its end", tot.OK)
	}
	assertNoSecrets(t, "proxy output", c.logs.String(), keyA, keyB, keyC, token)
}
