package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runCheck runs the command with -check in-process.
func runCheck(env map[string]string, args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = run(context.Background(), append([]string{"-check"}, args...), envFunc(env), &out, &errOut, nil)
	return out.String(), errOut.String(), err
}

func TestCheckAcceptsGoodConfig(t *testing.T) {
	file := filepath.Join(t.TempDir(), "keys")
	writeFile(t, file, "# team keys\n"+keyA+";max=50\n"+keyB+";weight=2;account=team;name=second\n")
	out, errOut, err := runCheck(map[string]string{
		"KEYPOOL_KEYS_FILE": file, "KEYPOOL_UPSTREAM": "https://api.deepseek.com",
		"KEYPOOL_ADDR": "0.0.0.0:8787", "KEYPOOL_TOKENS": token, "KEYPOOL_ADMIN_ADDR": "127.0.0.1:9090",
		"KEYPOOL_REDIS_URL": "redis://:" + keyC + "@redis.internal:6380/2",
	})
	if err != nil {
		t.Fatalf("check: %v\n%s", err, errOut)
	}
	for _, want := range []string{"configuration OK", "2 from KEYPOOL_KEYS_FILE", "sk-test-…0001, second",
		"https://api.deepseek.com", "0.0.0.0:8787", "127.0.0.1:9090/metrics", "1 token",
		"Redis at redis.internal:6380, database 2"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	assertNoSecrets(t, "summary", out+errOut, keyA, keyB, keyC, token)
}

func TestCheckRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys")
	writeFile(t, keyFile, keyA)
	base := func(extra map[string]string) map[string]string {
		env := map[string]string{"KEYPOOL_KEYS": keyA, "KEYPOOL_UPSTREAM": "https://api.deepseek.com"}
		for k, v := range extra {
			env[k] = v
		}
		return env
	}
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want string // in the message
	}{
		{"no keys", map[string]string{"KEYPOOL_UPSTREAM": "https://x"}, nil, "no keys"},
		{"keys twice", base(map[string]string{"KEYPOOL_KEYS_FILE": keyFile}), nil, "both KEYPOOL_KEYS and KEYPOOL_KEYS_FILE"},
		{"missing file", map[string]string{"KEYPOOL_KEYS_FILE": filepath.Join(dir, "nope")}, nil, "KEYPOOL_KEYS_FILE"},
		{"';' for ','", base(map[string]string{"KEYPOOL_KEYS": keyA + ";" + keyB}), nil, "separate keys with ','"},
		{"long option value", base(map[string]string{"KEYPOOL_KEYS": keyA + ";weight=" + keyB}), nil, "not a number"},
		{"duplicate key", base(map[string]string{"KEYPOOL_KEYS": keyA + "," + keyA}), nil, "duplicates"},
		{"no upstream", map[string]string{"KEYPOOL_KEYS": keyA}, nil, "KEYPOOL_UPSTREAM is not set"},
		{"upstream with credentials", base(map[string]string{"KEYPOOL_UPSTREAM": "https://user:" + keyB + "@api.example.com"}), nil, "holds credentials"},
		{"upstream not http", base(map[string]string{"KEYPOOL_UPSTREAM": "ftp://example.com"}), nil, "http or https"},
		{"upstream with query", base(map[string]string{"KEYPOOL_UPSTREAM": "https://example.com/?key=" + keyB}), nil, "query"},
		{"token is a key", base(map[string]string{"KEYPOOL_TOKENS": keyA}), nil, "client token #1"},
		{"token with space", base(map[string]string{"KEYPOOL_TOKENS": "a b"}), nil, "token #1"},
		{"open address", base(map[string]string{"KEYPOOL_ADDR": ":8787"}), nil, "not a loopback"},
		{"bad address", base(map[string]string{"KEYPOOL_ADDR": "8787"}), nil, "host:port"},
		{"bad timeout", base(map[string]string{"KEYPOOL_SHUTDOWN_TIMEOUT": "soon"}), nil, "KEYPOOL_SHUTDOWN_TIMEOUT"},
		{"bad body limit", base(map[string]string{"KEYPOOL_MAX_BODY_BYTES": "-1"}), nil, "KEYPOOL_MAX_BODY_BYTES"},
		{"bad log format", base(map[string]string{"KEYPOOL_LOG_FORMAT": "xml"}), nil, "text or json"},
		{"redis URL not redis", base(map[string]string{"KEYPOOL_REDIS_URL": "http://" + keyB}), nil, "invalid URL scheme: http"},
		{"redis URL bad port", base(map[string]string{"KEYPOOL_REDIS_URL": "redis://:" + keyB + "@localhost:port/0"}), nil, "KEYPOOL_REDIS_URL is not a Redis URL"},
		{"redis URL bad escape", base(map[string]string{"KEYPOOL_REDIS_URL": "redis://:" + keyB + "%zz@localhost:6379"}), nil, "does not parse"},
		{"redis URL bad db", base(map[string]string{"KEYPOOL_REDIS_URL": "redis://:" + keyB + "@localhost:6379/x"}), nil, "invalid database number"},
		{"redis URL flag", base(nil), []string{"-redis-url", "redis://u:" + keyB + "@[::1/0"}, "-redis-url is not a Redis URL"},
		{"flag wins: bad", base(nil), []string{"-upstream", "gopher://x"}, "-upstream"},
		{"stray argument", base(nil), []string{keyB}, "unexpected argument"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, errOut, err := runCheck(c.env, c.args...)
			if err == nil {
				t.Fatalf("accepted; printed %q", out)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want it to mention %q", err, c.want)
			}
			assertNoSecrets(t, "check output", err.Error()+out+errOut, keyA, keyB, token)
		})
	}
}

// TestSecretInWrongSettingIsNotPrinted puts a key in every setting that
// is not meant to hold one: the error must not repeat it.
func TestSecretInWrongSettingIsNotPrinted(t *testing.T) {
	for _, s := range settings {
		switch s.env {
		case "KEYPOOL_KEYS", "KEYPOOL_TOKENS":
			continue // where secrets belong
		}
		env := map[string]string{"KEYPOOL_KEYS": keyA, "KEYPOOL_UPSTREAM": "https://api.deepseek.com", s.env: keyB}
		for _, args := range [][]string{nil, {"-" + s.flag, keyB}} {
			out, errOut, err := runCheck(env, args...)
			if err == nil && s.env != "KEYPOOL_KEYS_FILE" {
				t.Errorf("%s=<a key> %v accepted", s.env, args)
			}
			msg := out + errOut
			if err != nil {
				msg += err.Error()
			}
			assertNoSecrets(t, s.env+" error", msg, keyA, keyB)
		}
	}
}

func TestFlagsWinOverEnvironment(t *testing.T) {
	file := filepath.Join(t.TempDir(), "keys")
	writeFile(t, file, keyC)
	out, _, err := runCheck(map[string]string{
		"KEYPOOL_KEYS": keyA + ";weight=-1", "KEYPOOL_UPSTREAM": "ftp://bad", "KEYPOOL_ADDR": "0.0.0.0:1",
		"KEYPOOL_SHUTDOWN_TIMEOUT": "never",
	}, "-keys-file", file, "-upstream", "https://api.deepseek.com", "--addr", "127.0.0.1:9999", "-shutdown-timeout", "5")
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	for _, want := range []string{"1 from -keys-file: sk-test-…0003", "https://api.deepseek.com", "127.0.0.1:9999", "up to 5s"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

func TestHelpPrintsNoSecret(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"-h"}, envFunc(map[string]string{"KEYPOOL_KEYS": keyA, "KEYPOOL_TOKENS": token}), &out, &errOut, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut.String(), "-keys-file") {
		t.Errorf("usage: %s", errOut.String())
	}
	assertNoSecrets(t, "usage", out.String()+errOut.String(), keyA, token)
}

// TestCheckExitCodes runs the built binary: -check exits 0 on a good
// configuration and 1, with the reason on stderr, on a bad one.
func TestCheckExitCodes(t *testing.T) {
	bin := binary(t)
	cmd := func(env ...string) (string, int) {
		c := exec.Command(bin, "-check")
		c.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
		var out bytes.Buffer
		c.Stdout, c.Stderr = &out, &out
		err := c.Run()
		var exit *exec.ExitError
		switch {
		case err == nil:
			return out.String(), 0
		case errors.As(err, &exit):
			return out.String(), exit.ExitCode()
		}
		t.Fatal(err)
		return "", -1
	}
	out, code := cmd("KEYPOOL_KEYS="+keyA, "KEYPOOL_UPSTREAM=https://api.deepseek.com")
	if code != 0 || !strings.Contains(out, "configuration OK") {
		t.Errorf("good config: exit %d: %s", code, out)
	}
	out, code = cmd("KEYPOOL_KEYS="+keyA+";"+keyB, "KEYPOOL_UPSTREAM=https://api.deepseek.com", "KEYPOOL_TOKENS="+token)
	if code != 1 || !strings.HasPrefix(out, "keypool: KEYPOOL_KEYS: ") {
		t.Errorf("bad config: exit %d: %q", code, out)
	}
	assertNoSecrets(t, "stderr", out, keyA, keyB, token)
	if _, code := cmd("KEYPOOL_KEYS=" + keyA); code != 1 {
		t.Errorf("no upstream: exit %d", code)
	}
	c := exec.Command(bin, "-no-such-flag")
	if err := c.Run(); err == nil || c.ProcessState.ExitCode() != 2 {
		t.Errorf("unknown flag: %v, want exit 2", err)
	}
}

// TestKeysFromProcessEnvironment runs the command as main does, on the
// process's environment: KEYPOOL_KEYS is read by keypool.KeysFromEnv,
// and its errors name the variable but no secret. A key flag still wins.
func TestKeysFromProcessEnvironment(t *testing.T) {
	for _, s := range settings {
		t.Setenv(s.env, "") // whatever the test's own environment holds
	}
	t.Setenv("KEYPOOL_KEYS", keyA+";max=5, "+keyB+";name=second")
	t.Setenv("KEYPOOL_UPSTREAM", "https://api.deepseek.com")
	cfg, err := loadConfig(nil, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.keys.env != "KEYPOOL_KEYS" {
		t.Errorf("the key list is read from %q, want KEYPOOL_KEYS through keypool.KeysFromEnv", cfg.keys.env)
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"-check"}, nil, &out, &errOut, nil); err != nil {
		t.Fatalf("check: %v\n%s", err, errOut.String())
	}
	if want := "2 from KEYPOOL_KEYS: sk-test-…0001, second"; !strings.Contains(out.String(), want) {
		t.Errorf("summary lacks %q:\n%s", want, out.String())
	}

	t.Setenv("KEYPOOL_KEYS", keyA+";weight="+keyB)
	err = run(context.Background(), []string{"-check"}, nil, &out, &errOut, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "KEYPOOL_KEYS: ") || !strings.Contains(err.Error(), "not a number") {
		t.Errorf("bad list in the environment: %v", err)
	}
	if err != nil {
		assertNoSecrets(t, "error", err.Error()+out.String()+errOut.String(), keyA, keyB)
	}

	out.Reset()
	if err := run(context.Background(), []string{"-check", "-keys", keyC}, nil, &out, &errOut, nil); err != nil {
		t.Fatalf("-keys over a bad KEYPOOL_KEYS: %v", err)
	}
	if want := "1 from -keys: sk-test-…0003"; !strings.Contains(out.String(), want) {
		t.Errorf("summary lacks %q:\n%s", want, out.String())
	}
}
