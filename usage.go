package keypool

import (
	"bytes"
	"encoding/json"
	"sync"
)

// usageScanner finds the "usage" objects of a response body as the
// caller reads it, a JSON answer's or a stream's chunks', without holding
// on to the body: it matches `"usage"` byte by byte and keeps only the
// object that follows, up to a bound.
//
// A stream may spread its usage over several events: Anthropic sends the
// input tokens in message_start and the output tokens, counted so far,
// in each message_delta. So each count keeps the last value given for
// it, and the total is their sum: the input tokens of one event and the
// output tokens of a later one both count.
type usageScanner struct {
	state   int8
	match   int // bytes of usageKey matched
	depth   int
	inStr   bool
	escaped bool
	n       int
	buf     *[usageMax]byte // borrowed from capturePool while capturing

	found         bool
	input, output int // the last prompt/input and completion/output counts
	total         int // the last total_tokens given
}

// tokens returns the tokens the usage found so far says were used.
func (s *usageScanner) tokens() int {
	if sum := s.input + s.output; sum > 0 {
		return max(sum, s.total)
	}
	return s.total
}

// usageMax bounds a usage object; OpenAI's, with its details, is about
// 300 bytes.
const usageMax = 512

// capturePool lends capture buffers, so that a lease carries none.
var capturePool = sync.Pool{New: func() any { return new([usageMax]byte) }}

// done returns the capture buffer, if one is out.
func (s *usageScanner) done() {
	if s.buf != nil {
		capturePool.Put(s.buf)
		s.buf = nil
	}
}

const (
	scanSearch int8 = iota
	scanAfterKey
	scanObject
)

const usageKey = `"usage"`

// feed scans the next bytes of the body.
func (s *usageScanner) feed(p []byte) {
	for len(p) > 0 {
		switch s.state {
		case scanSearch:
			p = s.search(p)
		case scanAfterKey:
			p = s.afterKey(p)
		default:
			p = s.object(p)
		}
	}
}

// search looks for `"usage"` and returns the bytes after it, or none.
func (s *usageScanner) search(p []byte) []byte {
	for i := 0; i < len(p); i++ {
		if s.match == 0 {
			// Nothing matched: skip to the next quote at once.
			j := bytes.IndexByte(p[i:], '"')
			if j < 0 {
				return nil
			}
			i += j
		}
		switch c := p[i]; {
		case c == usageKey[s.match]:
			if s.match++; s.match == len(usageKey) {
				s.state, s.match = scanAfterKey, 0
				return p[i+1:]
			}
		case c == '"':
			s.match = 1
		default:
			s.match = 0
		}
	}
	return nil
}

// afterKey skips to the '{' that opens the usage object, or goes back to
// searching ("usage": null, or the word in some string).
func (s *usageScanner) afterKey(p []byte) []byte {
	for i, c := range p {
		switch c {
		case ' ', '\t', '\r', '\n', ':':
			continue
		case '{':
			s.state, s.depth, s.inStr, s.escaped = scanObject, 1, false, false
			if s.buf == nil {
				s.buf = capturePool.Get().(*[usageMax]byte)
			}
			s.buf[0], s.n = '{', 1
		default:
			s.state = scanSearch
			if c == '"' {
				s.match = 1
			}
		}
		return p[i+1:]
	}
	return nil
}

// object captures the usage object up to its closing brace, and parses it.
func (s *usageScanner) object(p []byte) []byte {
	for i, c := range p {
		if s.n == usageMax {
			s.state = scanSearch // too large to be a usage object
			s.done()
			return p[i:]
		}
		s.buf[s.n] = c
		s.n++
		switch {
		case s.inStr:
			switch {
			case s.escaped:
				s.escaped = false
			case c == '\\':
				s.escaped = true
			case c == '"':
				s.inStr = false
			}
		case c == '"':
			s.inStr = true
		case c == '{':
			s.depth++
		case c == '}':
			if s.depth--; s.depth == 0 {
				s.state = scanSearch
				s.parse(s.buf[:s.n])
				s.done()
				return p[i+1:]
			}
		}
	}
	return nil
}

// parse reads the token counts of OpenAI's usage object, or of the
// input/output form other APIs use.
func (s *usageScanner) parse(obj []byte) {
	var u struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
		InputTokens      int `json:"input_tokens"`
		OutputTokens     int `json:"output_tokens"`
	}
	if json.Unmarshal(obj, &u) != nil {
		return
	}
	if in := u.PromptTokens + u.InputTokens; in > 0 {
		s.input, s.found = in, true
	}
	if out := u.CompletionTokens + u.OutputTokens; out > 0 {
		s.output, s.found = out, true
	}
	if u.TotalTokens > 0 {
		s.total, s.found = u.TotalTokens, true
	}
}
