package keypool

import (
	"net/http"
	"strconv"
)

// The headers on every response keypool hands over: the name of the key
// whose answer it is, and how many attempts the request took.
const (
	HeaderKey      = "Keypool-Key"
	HeaderAttempts = "Keypool-Attempts"
)

// WithResponseHeaders turns the Keypool-Key and Keypool-Attempts
// response headers on or off. They are on by default: a caller reads
// which key served a request from the response, as go-openai's and
// openai-go's response-header accessors give it. Key names are masked
// secrets unless Key.Name says otherwise.
func WithResponseHeaders(on bool) TransportOption {
	return func(t *Transport) error {
		t.responseHeaders = on
		return nil
	}
}

// label puts the key that served resp and the number of attempts on
// resp's headers, which are the upstream's and so ours to change.
func label(resp *http.Response, k *keyState, attempts int) {
	resp.Header[HeaderKey] = k.nameHeader
	if attempts > 0 && attempts < len(attemptCounts) {
		resp.Header[HeaderAttempts] = attemptCounts[attempts]
	} else {
		resp.Header[HeaderAttempts] = []string{strconv.Itoa(attempts)}
	}
}

// attemptCounts are the values of HeaderAttempts, made once so that
// labelling a response allocates nothing. Their capacity is their length,
// so that an append by anyone copies rather than writes here.
var attemptCounts = func() [][]string {
	counts := make([][]string, 32)
	for i := range counts {
		counts[i] = []string{strconv.Itoa(i)}[:1:1]
	}
	return counts
}()
