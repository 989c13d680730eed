package fakeupstream

import (
	"net/http"
	"time"
)

// protocol is how one family of endpoints speaks: how its requests read
// and how its errors, answers, streams and rate-limit headers are
// written. Admission does not depend on it: the Mode decides whether a
// request is admitted and whether a 429 says when to retry, the
// protocol only how that is said.
type protocol interface {
	// read parses a request body; badRequest, when not "", is the
	// message of the 400 the request gets instead.
	read(r *http.Request, body []byte) (req request, badRequest string)
	// writeError writes an error answer with the headers h.
	writeError(w http.ResponseWriter, e apiError, h http.Header)
	// writeAnswer writes a whole, non-streamed answer.
	writeAnswer(w http.ResponseWriter, c *call)
	// streamHead writes the events a stream starts with, streamChunk its
	// content chunk i, and streamTail the events after the content.
	streamHead(e *sse, c *call)
	streamChunk(e *sse, c *call, i int)
	streamTail(e *sse, c *call)
	// limitHeaders writes the state of an account's buckets.
	limitHeaders(h http.Header, a *accountState, now time.Time)
	// retryHeaders writes how long to wait before a retry.
	retryHeaders(h http.Header, wait time.Duration)
	// modelList is the answer to GET /models.
	modelList(models []string) any
}

// request is what a protocol reads of a request body.
type request struct {
	model  string
	stream bool
	// completion is how many tokens the answer will have.
	completion int
}

// defaultCompletion is how many tokens an answer has unless the request
// asks for fewer.
const defaultCompletion = 16

// completionTokens returns how many tokens an answer has when the
// request caps them at limit, if it does.
func completionTokens(limit *int) int {
	if limit == nil {
		return defaultCompletion
	}
	return min(defaultCompletion, *limit)
}

// apiError is an error answer: its status and, in OpenAI's terms, its
// type, code and message. Other protocols derive their own terms from
// them.
type apiError struct {
	status                 int
	errType, code, message string
}
