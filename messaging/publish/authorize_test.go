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
	p := publish.New(publish.Config{Conn: messaging.NewConn(messaging.ConnConfig{Access: func() messaging.Access { return messaging.Access{} }}), Source: "batch",
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
		for _, prefix := range []string{publish.PathPrefix, publish.BatchPrefix} {
			body := "x"
			if prefix == publish.BatchPrefix {
				body = `{"text":"x"}` + "\n"
			}
			a := do(p, http.MethodPost, prefix+c.topic, strings.NewReader(body), nil)
			if a.code != c.status || a.body["error"] != c.code {
				t.Errorf("%s%s: %d %s; want %d %s", prefix, c.topic, a.code, a.raw, c.status, c.code)
			}
		}
	}
}
