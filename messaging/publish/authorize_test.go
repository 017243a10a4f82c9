package publish_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/messaging/publish"
)

func TestAuthorize(t *testing.T) {
	p := publish.New(publish.Config{Conn: messaging.NewConn(messaging.ConnConfig{URL: func() string { return "" }}), Source: "batch",
		Authorize: func(_ context.Context, topic string) error {
			switch topic {
			case "closed":
				return fmt.Errorf("%w: TopicPolicy/closed does not list service \"batch\"", messaging.ErrDenied)
			case "unknown":
				return errors.New("the control plane's topic policies are not known yet")
			}
			return nil
		}})
	for _, c := range []struct {
		topic, code string
		status      int
	}{
		{"closed", publish.CodeDenied, http.StatusForbidden},
		{"unknown", publish.CodeBrokerUnavailable, http.StatusServiceUnavailable},
	} {
		req := strings.NewReader("x")
		a := do(p, http.MethodPost, publish.PathPrefix+c.topic, req, nil)
		if a.code != c.status || a.body["error"] != c.code {
			t.Errorf("%s: %d %s; want %d %s", c.topic, a.code, a.raw, c.status, c.code)
		}
	}
}
