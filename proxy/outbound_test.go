package proxy

import (
	"io"
	"strings"
	"testing"
)

// TestReplayBody: a held body is sent whole again; after a try that read
// nothing (a refused connection) the next try still gets all of it.
func TestReplayBody(t *testing.T) {
	b := &replayBody{src: io.NopCloser(strings.NewReader("hello world")), limit: 64}
	again := b.again() // nothing read yet
	if got, _ := io.ReadAll(again); string(got) != "hello world" {
		t.Fatalf("after an unread try: %q", got)
	}
	if !b.whole() {
		t.Fatal("read to its end within the limit, but not whole")
	}
	if got, _ := io.ReadAll(b.again()); string(got) != "hello world" {
		t.Fatalf("second replay: %q", got)
	}
	big := &replayBody{src: io.NopCloser(strings.NewReader(strings.Repeat("x", 100))), limit: 10}
	io.ReadAll(big)
	if big.whole() {
		t.Fatal("a body past the limit counts as held")
	}
}
