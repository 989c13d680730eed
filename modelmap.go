package keypool

import (
	"bytes"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
)

// mappedModel returns the name k's provider has for model, when k's
// ModelMap renames it.
func (k *keyState) mappedModel(model string) (string, bool) {
	if model == "" || k.modelMap == nil {
		return "", false
	}
	to, ok := k.modelMap[model]
	return to, ok && to != model
}

// mapsModel reports whether model is in k's ModelMap, renamed or not:
// k serves it by that mapping, which a model_not_found then disables.
func (k *keyState) mapsModel(model string) bool {
	_, ok := k.modelMap[model]
	return ok && model != ""
}

// refusedModel reports whether k's provider refused k's name for model,
// at ns (unix nanoseconds).
func (k *keyState) refusedModel(model string, ns int64) bool {
	m := k.refusedModels.Load()
	if m == nil {
		return false
	}
	until, ok := (*m)[model]
	return ok && until > ns
}

// refuseModel stops k from serving model until until: its provider
// answered that k's name for it does not exist.
func (k *keyState) refuseModel(model string, until int64) {
	for {
		old := k.refusedModels.Load()
		next := map[string]int64{model: until}
		if old != nil {
			next = maps.Clone(*old)
			next[model] = until
		}
		if k.refusedModels.CompareAndSwap(old, &next) {
			return
		}
	}
}

// refusedModelNames lists, sorted, the models k does not serve now
// because its provider refused their names.
func (k *keyState) refusedModelNames(now int64) []string {
	m := k.refusedModels.Load()
	if m == nil {
		return nil
	}
	var names []string
	for model, until := range *m {
		if until > now {
			names = append(names, model)
		}
	}
	slices.Sort(names)
	return names
}

// isModelRefusal reports whether an error answer says the model it was
// asked for does not exist there: OpenAI's and DeepSeek's
// model_not_found, Azure's DeploymentNotFound, Anthropic's not_found_error
// about the model, and the messages OpenRouter and others send.
func isModelRefusal(status int, e apiError) bool {
	if status != http.StatusBadRequest && status != http.StatusNotFound && status != http.StatusUnprocessableEntity {
		return false
	}
	switch strings.ToLower(e.Code) {
	case "model_not_found", "deploymentnotfound", "invalid_model", "model_not_available":
		return true
	}
	msg := strings.ToLower(e.Message)
	if !strings.Contains(msg, "model") {
		return false
	}
	if e.Type == "not_found_error" {
		return true
	}
	for _, says := range [...]string{"not found", "does not exist", "not exist", "not a valid model", "invalid model", "unknown model", "no such model"} {
		if strings.Contains(msg, says) {
			return true
		}
	}
	return false
}

// rewriteModel returns body with every top-level "model" member whose
// value is a string set to to, every other byte as it was. It returns
// body itself, unchanged, when body is not a JSON object or has no such
// member.
func rewriteModel(body []byte, to string) []byte {
	spans := modelValueSpans(body)
	if len(spans) == 0 {
		return body
	}
	value := encodeJSONString(to)
	out := make([]byte, 0, len(body)+len(spans)*(len(value)+8))
	at := 0
	for _, s := range spans {
		out = append(out, body[at:s.start]...)
		out = append(out, value...)
		at = s.end
	}
	return append(out, body[at:]...)
}

type span struct{ start, end int }

// renameableModel is the model a rename of body would change: the last
// top-level "model" member's string value, its name matched exactly.
// encoding/json, which reads the request's model, also matches "Model"
// or "MODEL"; where the two disagree, no rename can be trusted.
func renameableModel(body []byte) string {
	spans := modelValueSpans(body)
	if len(spans) == 0 {
		return ""
	}
	last := spans[len(spans)-1]
	var model string
	json.Unmarshal(body[last.start:last.end], &model) // a string, as the decoder found it
	return model
}

// modelValueSpans finds where the string values of the top-level "model"
// members of a JSON object lie in body; none unless body is one valid
// JSON object.
func modelValueSpans(body []byte) []span {
	if !json.Valid(body) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	var spans []span
	for dec.More() {
		name, err := dec.Token()
		if err != nil {
			return nil
		}
		afterName := int(dec.InputOffset())
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil
		}
		if name != "model" || len(value) == 0 || value[0] != '"' {
			continue
		}
		// The value is the first thing after the name's colon and any
		// white space; it ends where the decoder stopped.
		colon := bytes.IndexByte(body[afterName:], ':')
		start := afterName + colon + 1
		for start < len(body) && isJSONSpace(body[start]) {
			start++
		}
		spans = append(spans, span{start, int(dec.InputOffset())})
	}
	return spans
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// encodeJSONString writes s as a JSON string, without the HTML escaping
// of json.Marshal: a model name's bytes stay as they are.
func encodeJSONString(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s) // a string always encodes
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// modelBody is a request body rewritten for one provider's model name.
type modelBody struct {
	to   string
	body []byte
}

// readModel reads the model and the tokens c's request asks for, when
// the pool's keys pick by model or count tokens. A key that renames
// models serves a request only if its model is known: not when the body
// was too large to read, not when encoding/json and a rename would see
// different models in it, and not when it was not read at all (the pool
// had no such key when the request began).
func (c *call) readModel(s *snapshot) {
	if !s.filtersModels && !s.countsTokens {
		c.need.modelUnknown = c.body.getBody != nil
		return
	}
	c.need.model, c.need.tokens, c.need.modelUnknown = c.body.meta(c.req, c.t.maxBodyBytes)
	if s.mapsModels && c.need.model != "" && renameableModel(c.body.buf) != c.need.model {
		c.need.model, c.need.modelUnknown = "", true
	}
}

// bodyFor returns the body of an attempt with k when k renames the
// request's model: the caller's body with the model rewritten, made once
// per name and kept for later attempts. It returns nil when k sends the
// body as it is.
func (c *call) bodyFor(k *keyState) []byte {
	to, ok := k.mappedModel(c.need.model)
	if !ok || c.body.buf == nil {
		return nil
	}
	for _, m := range c.renamed {
		if m.to == to {
			return m.body
		}
	}
	b := rewriteModel(c.body.buf, to)
	c.renamed = append(c.renamed, modelBody{to, b})
	return b
}

// renamedBody is a body for one attempt, from bytes the call owns.
func renamedBody(b []byte) (io.ReadCloser, func() (io.ReadCloser, error)) {
	get := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	rc, _ := get()
	return rc, get
}
