package main

import "github.com/keypool/keypool"

func limitsOf(k keypool.Key) keypool.Limits {
	return keypool.Limits{RPM: k.RPM, TPM: k.TPM, MaxConcurrent: k.MaxConcurrent}
}

// accountLimits gathers each account's limits from its keys. keypool.New
// has made sure the keys of an account agree where they set a limit, so
// the largest value of each field is the one set.
func accountLimits(keys []keypool.Key) map[string]keypool.Limits {
	out := map[string]keypool.Limits{}
	for _, k := range keys {
		if k.Account == "" {
			continue
		}
		l := out[k.Account]
		out[k.Account] = keypool.Limits{RPM: max(l.RPM, k.RPM), TPM: max(l.TPM, k.TPM), MaxConcurrent: max(l.MaxConcurrent, k.MaxConcurrent)}
	}
	return out
}
