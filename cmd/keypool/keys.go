package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/keypool/keypool"
)

// maxKeyFileBytes bounds a key file; a list of 10,000 keys with options
// fits in well under it.
const maxKeyFileBytes = 4 << 20

// keySource is where the key list comes from: a list given inline
// (KEYPOOL_KEYS, -keys) or a file (KEYPOOL_KEYS_FILE, -keys-file). A
// reload reads it again; only a file can change while the process runs.
type keySource struct {
	from   string // the setting it came by, for messages
	inline string // holds secrets
	file   string
	// env names the process's environment variable holding the list,
	// read with keypool.KeysFromEnv; "" when the list came by a flag, a
	// file, or an environment a test passed in.
	env string
}

// keySourceFrom picks the key list's source. Either key flag given makes
// both key variables be ignored, so that a flag always wins. processEnv
// says that get reads the process's environment.
func keySourceFrom(get lookup, flagGiven, processEnv bool) (keySource, error) {
	inline, inlineFrom := get("KEYPOOL_KEYS")
	file, fileFrom := get("KEYPOOL_KEYS_FILE")
	if flagGiven {
		if !strings.HasPrefix(inlineFrom, "-") {
			inline = ""
		}
		if !strings.HasPrefix(fileFrom, "-") {
			file = ""
		}
	}
	switch {
	case inline != "" && file != "":
		return keySource{}, fmt.Errorf("both %s and %s are set; set one", inlineFrom, fileFrom)
	case inline != "":
		src := keySource{from: inlineFrom, inline: inline}
		if processEnv && !strings.HasPrefix(inlineFrom, "-") {
			src.env = inlineFrom
		}
		return src, nil
	case file != "":
		return keySource{from: fileFrom, file: file}, nil
	}
	return keySource{}, fmt.Errorf("no keys: set KEYPOOL_KEYS or KEYPOOL_KEYS_FILE (syntax: sk-a;max=50, sk-b;weight=2)")
}

// load reads and parses the key list. Its errors name keys by position
// and masked secret only.
func (s keySource) load() ([]keypool.Key, error) {
	if s.env != "" {
		keys, err := keypool.KeysFromEnv(s.env)
		if err != nil {
			// Its error names the variable, then the parser's; the
			// parser's alone reads as this command's other errors do.
			if inner := errors.Unwrap(err); inner != nil {
				err = inner
			}
			return nil, &settingError{s.from, err}
		}
		return keys, nil
	}
	list := s.inline
	if s.file != "" {
		var err error
		if list, err = s.readFile(); err != nil {
			return nil, err
		}
	}
	keys, err := keypool.ParseKeys(list)
	if err != nil {
		return nil, &settingError{s.from, err}
	}
	return keys, nil
}

// readFile reads the key file. Errors leave the path out (the operator
// knows it), in case a key was put where the path belongs.
func (s keySource) readFile() (string, error) {
	f, err := os.Open(s.file)
	if err != nil {
		return "", fmt.Errorf("%s: cannot open the file: %w", s.from, pathless(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("%s: cannot read the file: %w", s.from, pathless(err))
	}
	if len(b) > maxKeyFileBytes {
		return "", fmt.Errorf("%s: the file is larger than %d bytes", s.from, maxKeyFileBytes)
	}
	return string(b), nil
}

// checkKeys checks a key list against the rest of the configuration, as
// New and Add would and more: a key without a BaseURL needs an upstream,
// and a client token must not be a key's secret. It returns the names
// the pool will give the keys.
func checkKeys(cfg *config, from string, keys []keypool.Key) ([]string, error) {
	p, err := keypool.New(keys)
	if err != nil {
		return nil, &settingError{from, err}
	}
	stats := p.Stats()
	names := make([]string, len(stats))
	for i, st := range stats {
		names[i] = st.Name
	}
	for i, k := range keys {
		if k.BaseURL == "" && cfg.upstream == nil {
			return nil, fmt.Errorf("%s: key list entry #%d (%s) has no base= and KEYPOOL_UPSTREAM is not set", from, i+1, names[i])
		}
		for j, t := range cfg.tokens {
			if t == k.Secret {
				return nil, fmt.Errorf("%s: key list entry #%d (%s) is also client token #%d; clients must not hold API keys", from, i+1, names[i], j+1)
			}
		}
	}
	return names, nil
}

// pathless drops the path from a file system error.
func pathless(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
