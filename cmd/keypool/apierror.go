package main

import (
	"encoding/json"
	"net/http"
)

// apiError is OpenAI's error body, which every OpenAI-compatible client
// parses: {"error":{"message":…,"type":…,"param":null,"code":…}}.
type apiError struct {
	Error apiErrorDetail `json:"error"`
}

type apiErrorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

// writeAPIError answers with status and an OpenAI error body. message
// must never hold a secret or a client token.
func writeAPIError(w http.ResponseWriter, status int, errType, code, message string) {
	body, _ := json.Marshal(apiError{apiErrorDetail{Message: message, Type: errType, Code: code}})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}
