package deliver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"
)

// Verdict is what to do with a message after one delivery attempt.
type Verdict uint8

const (
	Ack        Verdict = iota // done
	Retry                     // redeliver after a backoff, until maxDeliveries
	DeadLetter                // to the dead letter topic at once
)

func (v Verdict) String() string {
	switch v {
	case Ack:
		return "ack"
	case Retry:
		return "retry"
	case DeadLetter:
		return "deadletter"
	}
	return "unknown"
}

// MaxAnswerBytes is how much of the app's answer body is read.
const MaxAnswerBytes = 4 << 10

// ParseAnswer turns the app's answer to a delivery into a verdict and, for
// anything but Ack, a one-line reason (recorded on a dead letter).
//
//   - 2xx with an empty body, a body that is not a JSON object, or a JSON
//     object without "status": Ack.
//   - 2xx with {"status": "SUCCESS" | "RETRY" | "DEADLETTER"} (any case):
//     that verdict; any other status value: Retry, as the app meant
//     something the sidecar does not understand.
//   - 408, 425, 429 and 5xx: Retry.
//   - other 4xx (404: no handler at the path; 400, 415, 422: the app
//     refuses the message itself): DeadLetter at once, since delivering the
//     same message again cannot succeed.
//   - anything else (1xx, 3xx): Retry.
//
// body is untrusted: it is read bounded (MaxAnswerBytes) and only quoted,
// truncated, into the reason.
func ParseAnswer(status int, body []byte) (Verdict, string) {
	if len(body) > MaxAnswerBytes {
		body = body[:MaxAnswerBytes]
	}
	switch {
	case status >= 200 && status < 300:
		t := bytes.TrimSpace(body)
		if len(t) == 0 || t[0] != '{' {
			return Ack, ""
		}
		var a struct {
			Status *string `json:"status"`
		}
		if json.Unmarshal(t, &a) != nil || a.Status == nil {
			return Ack, ""
		}
		return statusVerdict(*a.Status)
	case status == http.StatusRequestTimeout, status == http.StatusTooEarly, status == http.StatusTooManyRequests, status >= 500 && status < 600:
		return Retry, statusReason(status, body)
	case status >= 400 && status < 500:
		return DeadLetter, statusReason(status, body) + " (a 4xx is not retried)"
	}
	return Retry, statusReason(status, body)
}

// statusVerdict reads the app's {"status": ...} word.
func statusVerdict(status string) (Verdict, string) {
	switch strings.ToUpper(strings.TrimSpace(status)) {
	case "SUCCESS", "":
		return Ack, ""
	case "RETRY":
		return Retry, "app answered RETRY"
	case "DEADLETTER", "DEAD_LETTER", "DROP":
		return DeadLetter, "app answered DEADLETTER"
	}
	return Retry, fmt.Sprintf("app answered unknown status %s (want SUCCESS, RETRY or DEADLETTER)", quote(status))
}

func statusReason(status int, body []byte) string {
	r := fmt.Sprintf("app answered %d %s", status, http.StatusText(status))
	if t := bytes.TrimSpace(body); len(t) > 0 {
		r += ": " + quote(string(t))
	}
	return r
}

// quote shortens untrusted text to a printable, bounded snippet.
func quote(s string) string {
	const max = 200
	if len(s) > max {
		s = s[:max]
		for !utf8.ValidString(s) && len(s) > 0 {
			s = s[:len(s)-1]
		}
		s += "…"
	}
	return fmt.Sprintf("%q", s)
}
