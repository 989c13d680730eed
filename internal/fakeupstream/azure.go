package fakeupstream

import "strings"

// Azure OpenAI serves chat completions on
// /openai/deployments/{deployment}/chat/completions?api-version=...,
// with the secret in an api-key header. The server answers it as any
// chat completion; the deployment stands for the model when the body
// names none. The api-version is not checked.

// azureDeployment returns the deployment an Azure OpenAI path names, or
// "" when the path is not one.
func azureDeployment(path string) string {
	_, rest, ok := strings.Cut(path, "/openai/deployments/")
	if !ok {
		return ""
	}
	name, ok := strings.CutSuffix(rest, "/chat/completions")
	if !ok || strings.Contains(name, "/") {
		return ""
	}
	return name
}
