package keypool

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestSecretsStayOutOfErrorsAndStats(t *testing.T) {
	secrets := []string{"sk-live-0000000000000000aaaa", "sk-live-0000000000000000bbbb"}
	keys := []Key{{Secret: secrets[0], BaseURL: closedURL(t)}, {Secret: secrets[1], BaseURL: closedURL(t)}}
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	tr, p, _ := newFakeClockTransport(t, keys, base, []Option{WithMaxWait(time.Millisecond)})
	_, err := post(t, tr, "http://127.0.0.1:1", chatBody)
	var out bytes.Buffer
	fmt.Fprintf(&out, "%v\n%+v\n%#v\n%v\n%+v\n", err, err, p.Stats(), keys, keys)
	for _, s := range secrets {
		if strings.Contains(out.String(), s) || strings.Contains(out.String(), s[8:]) {
			t.Errorf("secret %s… appears in:\n%s", s[:8], out.String())
		}
	}
}
