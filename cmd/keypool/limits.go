package main

import "github.com/keypool/keypool"

// limits are the RPM, TPM and in-flight limits of a key, or of an account
// its keys share; 0 means none.
type limits struct {
	RPM, TPM, MaxConcurrent int
}

func limitsOf(k keypool.Key) limits {
	return limits{RPM: k.RPM, TPM: k.TPM, MaxConcurrent: k.MaxConcurrent}
}

// setLimits is the command's only call of Pool.SetLimits.
//
// LATER: SetLimits is to take a keypool.Limits{RPM, TPM, MaxConcurrent};
// when it does, this becomes p.SetLimits(name, keypool.Limits(l)).
func setLimits(p *keypool.Pool, name string, l limits) error {
	return p.SetLimits(name, l.RPM, l.TPM, l.MaxConcurrent)
}

// accountLimits gathers each account's limits from its keys. keypool.New
// has made sure the keys of an account agree where they set a limit, so
// the largest value of each field is the one set.
func accountLimits(keys []keypool.Key) map[string]limits {
	out := map[string]limits{}
	for _, k := range keys {
		if k.Account == "" {
			continue
		}
		l := out[k.Account]
		out[k.Account] = limits{max(l.RPM, k.RPM), max(l.TPM, k.TPM), max(l.MaxConcurrent, k.MaxConcurrent)}
	}
	return out
}
