//go:build linux

package main

import (
	"strings"
	"testing"
)

// An inbox says it is full once the lines in it pass inboxLimit, stays full until its owner takes
// them, and the take says it was: that is when the senders that stopped reading are told there is
// room. Messages come out in the order they were posted, and the eventfd counts a wake-up only for a
// post to an empty inbox.
func TestInboxFillsAndEmpties(t *testing.T) {
	in, err := newInbox()
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	line := strings.Repeat("x", 1000)
	posted := 0
	for {
		ok, full := in.post([]message{{from: 1, line: line}})
		if !ok {
			t.Fatal("post to an open inbox failed")
		}
		posted++
		if full {
			break
		}
		if posted*len(line) > inboxLimit {
			t.Fatalf("%d bytes posted and the inbox is not full (limit %d)", posted*len(line), inboxLimit)
		}
	}
	if posted*len(line) <= inboxLimit || !in.isFull() {
		t.Fatalf("full after %d bytes, want just past %d", posted*len(line), inboxLimit)
	}
	msgs, wasFull := in.take(nil)
	if len(msgs) != posted || !wasFull || in.isFull() {
		t.Fatalf("took %d of %d messages, wasFull %v, full now %v: want all, true, false", len(msgs), posted, wasFull, in.isFull())
	}
	if _, wasFull := in.take(nil); wasFull {
		t.Fatal("an emptied inbox still says it was full")
	}
}
