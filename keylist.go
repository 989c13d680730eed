package keypool

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ParseKeys reads a key list as it is kept in an environment variable or
// a file: entries separated by commas or new lines, each a secret
// followed by any of these options, separated by semicolons:
//
//	name=NAME  account=NAME  base=URL  weight=W  rpm=N  tpm=N  max=N  models=M1|M2
//	priority=N  model:ASKED=SENT  auth=bearer|api-key|x-api-key  header=NAME
//
// auth=azure is api-key and auth=anthropic is x-api-key.
// model:ASKED=SENT adds ASKED → SENT to the key's ModelMap; give it once
// per model. ASKED holds no '=', and neither name a ',' or ';'. Blank
// entries and lines starting with # are skipped. For example, DeepSeek's
// own keys first and OpenRouter's for when DeepSeek cannot serve:
//
//	sk-aaa;max=50, sk-bbb;weight=2;account=team;models=deepseek-chat|deepseek-reasoner
//	sk-or-ccc;priority=-1;base=https://openrouter.ai/api;model:deepseek-chat=deepseek/deepseek-chat
//
// Errors name an entry by its position and masked secret, never by the
// secret itself. ParseKeys checks the syntax; New checks the keys.
func ParseKeys(list string) ([]Key, error) {
	// What files and env files add around a list: a byte-order mark
	// (Windows editors), quotes around the whole value (docker's
	// --env-file keeps them).
	list = unquote(strings.TrimSpace(strings.TrimPrefix(list, utf8BOM)))
	var keys []Key
	n := 0
	for _, line := range strings.Split(list, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, entry := range strings.Split(line, ",") {
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			n++
			if opt, ok := optionName(strings.Split(entry, ";")[0]); ok {
				return nil, fmt.Errorf("%w: key list entry #%d looks like an option (%s=…); separate a key's options with ';' and keys with ',' or new lines",
					ErrInvalidConfig, n, opt)
			}
			k, err := parseKeyEntry(entry)
			if err != nil {
				return nil, fmt.Errorf("%w: key list entry #%d: %v", ErrInvalidConfig, n, err)
			}
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: the key list holds no keys", ErrNoKeys)
	}
	return keys, nil
}

func parseKeyEntry(entry string) (Key, error) {
	fields := strings.Split(entry, ";")
	k := Key{Secret: strings.TrimSpace(fields[0])}
	label := maskSecret(k.Secret)
	if k.Secret == "" {
		return k, fmt.Errorf("no secret before the options")
	}
	if strings.ContainsAny(k.Secret, " \t") {
		return k, fmt.Errorf("(%s): the secret holds white space; is a ';' missing?", label)
	}
	seen := make(map[string]bool, len(fields)-1)
	for i, f := range fields[1:] {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		name, value, ok := strings.Cut(f, "=")
		name, value = strings.TrimSpace(name), unquote(strings.TrimSpace(value))
		if !ok || name == "" {
			// Not quoted: it may be a second secret after a ';' meant as ','.
			return k, fmt.Errorf("(%s): option %d is not name=value; separate keys with ',' or new lines", label, i+1)
		}
		if from, ok := cutPrefixFold(name, "model:"); ok {
			if err := addModelMapping(&k, strings.TrimSpace(from), value); err != nil {
				return k, fmt.Errorf("(%s): %v", label, err)
			}
			continue
		}
		canonical, known := optionNames[strings.ToLower(name)]
		if known && seen[canonical] {
			return k, fmt.Errorf("(%s): %s is given twice", label, canonical)
		}
		seen[canonical] = true
		switch err := setOption(&k, canonical, value); {
		case errors.Is(err, errUnknownOption):
			return k, fmt.Errorf("(%s): unknown option %s; known: %s", label, quoteShort(name), knownOptions)
		case errors.Is(err, errUnknownAuth):
			return k, fmt.Errorf("(%s): auth=%s is not one of bearer, api-key, x-api-key", label, quoteShort(value))
		case err != nil:
			return k, fmt.Errorf("(%s): %s=%s is not a number", label, name, quoteShort(value))
		}
	}
	return k, nil
}

// errUnknownOption is setOption's error for a name it does not know.
var errUnknownOption = errors.New("unknown option")

// errUnknownAuth is setOption's error for an auth style it does not know.
var errUnknownAuth = errors.New("unknown auth style")

// knownOptions lists the options, for errors.
const knownOptions = "name, account, base, weight, rpm, tpm, max, models, priority, model:ASKED, auth, header"

// cutPrefixFold is strings.CutPrefix, ignoring case.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// addModelMapping adds model:from=to to k's ModelMap.
func addModelMapping(k *Key, from, to string) error {
	switch {
	case from == "":
		return fmt.Errorf("model:=%s names no model before the '='; write model:ASKED=SENT", quoteShort(to))
	case to == "":
		return fmt.Errorf("model:%s= names no model after the '='", quoteShort(from))
	case k.ModelMap[from] != "":
		return fmt.Errorf("model:%s is given twice", quoteShort(from))
	}
	if k.ModelMap == nil {
		k.ModelMap = make(map[string]string)
	}
	k.ModelMap[from] = to
	return nil
}

// authStyles maps ParseKeys's names to auth styles; the providers'
// names are aliases.
var authStyles = map[string]AuthStyle{
	"default": AuthDefault, "bearer": AuthBearer, "api-key": AuthAPIKey, "x-api-key": AuthXAPIKey,
	"azure": AuthAPIKey, "anthropic": AuthXAPIKey,
}

// setOption sets the option named canonical (see optionNames) to value.
func setOption(k *Key, canonical, value string) error {
	var err error
	switch canonical {
	case "name":
		k.Name = value
	case "account":
		k.Account = value
	case "base":
		k.BaseURL = value
	case "weight":
		k.Weight, err = strconv.ParseFloat(value, 64)
	case "rpm":
		k.RPM, err = strconv.Atoi(value)
	case "tpm":
		k.TPM, err = strconv.Atoi(value)
	case "max":
		k.MaxConcurrent, err = strconv.Atoi(value)
	case "models":
		k.Models = strings.Split(value, "|")
		for i, m := range k.Models {
			k.Models[i] = strings.TrimSpace(m)
		}
	case "priority":
		k.Priority, err = strconv.Atoi(value)
	case "auth":
		style, ok := authStyles[strings.ToLower(value)]
		if !ok {
			return errUnknownAuth
		}
		k.Auth = style
	case "header":
		k.Header = value
	default:
		return errUnknownOption
	}
	return err
}

// optionNames maps every accepted spelling of an option to its name.
var optionNames = map[string]string{
	"name": "name", "account": "account",
	"base": "base", "base_url": "base", "baseurl": "base",
	"weight": "weight", "rpm": "rpm", "tpm": "tpm",
	"max": "max", "max_concurrent": "max", "maxconcurrent": "max",
	"models": "models", "priority": "priority", "auth": "auth", "header": "header",
}

// optionName reports whether field, the part of an entry before its first
// ';', is an option rather than a secret, and which. A secret may hold
// '=' (base64 padding), but never starts with an option's name and '='.
func optionName(field string) (string, bool) {
	name, _, ok := strings.Cut(field, "=")
	if !ok {
		return "", false
	}
	canonical, known := optionNames[strings.ToLower(strings.TrimSpace(name))]
	return canonical, known
}

// unquote removes one pair of matching quotes around a value.
func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		return v[1 : len(v)-1]
	}
	return v
}

// KeysFromEnv reads a key list in ParseKeys syntax from the environment
// variable name. Its errors name the variable, never its value.
func KeysFromEnv(name string) ([]Key, error) {
	list, ok := os.LookupEnv(name)
	if !ok {
		return nil, fmt.Errorf("%w: the environment variable %s is not set", ErrNoKeys, name)
	}
	keys, err := ParseKeys(list)
	if err != nil {
		return nil, fmt.Errorf("environment variable %s: %w", name, err)
	}
	return keys, nil
}
