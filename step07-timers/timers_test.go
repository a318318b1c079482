//go:build linux

package main

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// The heap against a plain list: random sets, moves and clears, then expire must hand back exactly
// the deadlines that are due, earliest first, and nothing that was cleared.
func TestDeadlinesAreAHeap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	t0 := time.Unix(0, 0)
	var h deadlines
	all := make([]*deadline, 200)
	for i := range all {
		all[i] = &deadline{why: "idle"}
	}
	set := map[*deadline]bool{}
	for range 5000 {
		d := all[rng.IntN(len(all))]
		if rng.IntN(4) == 0 {
			h.clear(d)
			delete(set, d)
		} else {
			h.set(d, t0.Add(time.Duration(rng.IntN(1000))*time.Millisecond))
			set[d] = true
		}
	}
	if h.Len() != len(set) {
		t.Fatalf("the heap holds %d deadlines, %d were set and not cleared", h.Len(), len(set))
	}
	now := t0.Add(500 * time.Millisecond)
	var want []time.Time
	for d := range set {
		if !d.when.After(now) {
			want = append(want, d.when)
		}
	}
	slices.SortFunc(want, func(a, b time.Time) int { return a.Compare(b) })
	var got []time.Time
	for d := h.expire(now); d != nil; d = h.expire(now) {
		if !set[d] {
			t.Fatal("expire handed back a deadline that was cleared")
		}
		got = append(got, d.when)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("expired %d deadlines, want %d, in order of time", len(got), len(want))
	}
	if next := h.next(); next == nil || !next.when.After(now) {
		t.Fatalf("after expire, the earliest deadline left is %v: want one after %v", next, now)
	}
}

// keepTime: a line heard moves the idle deadline on from this turn; the first bytes of a line start
// the line deadline, more bytes do not move it, and the newline clears it; while the server does not
// read the client, its line clock stops; a stopping server keeps no client's clock.
func TestKeepTimeFollowsWhatTheClientSaid(t *testing.T) {
	t0 := time.Unix(1000, 0)
	p := &poller{idleFor: 5 * time.Minute, lineFor: 30 * time.Second, now: t0}
	c := &conn{fd: 5, wantRead: true}
	c.idle, c.line = deadline{c: c, why: "idle"}, deadline{c: c, why: "line"}
	p.set(&c.idle, t0.Add(p.idleFor))

	p.now = t0.Add(time.Minute)
	c.midLine = true // "hel"
	p.keepTime(c)
	if !p.has(&c.line) || !c.line.when.Equal(p.now.Add(p.lineFor)) || !c.idle.when.Equal(t0.Add(p.idleFor)) {
		t.Fatalf("after the start of a line: line deadline %v (set: %v), idle %v", c.line.when, p.has(&c.line), c.idle.when)
	}
	started := c.line.when
	p.now = t0.Add(2 * time.Minute)
	p.keepTime(c) // "lo, wor": still no newline
	if !c.line.when.Equal(started) {
		t.Fatalf("more bytes of the same line moved its deadline from %v to %v", started, c.line.when)
	}
	p.now = t0.Add(3 * time.Minute)
	c.spoke, c.midLine = true, false // "ld\n"
	p.keepTime(c)
	if p.has(&c.line) || !c.idle.when.Equal(p.now.Add(p.idleFor)) || c.spoke {
		t.Fatalf("after the newline: line deadline set %v, idle %v, want %v", p.has(&c.line), c.idle.when, p.now.Add(p.idleFor))
	}
	if p.next() != &c.idle {
		t.Fatal("the idle deadline is not the heap's earliest")
	}
	p.now = t0.Add(4 * time.Minute)
	c.midLine, c.wantRead = true, false // the start of a line, then the room paused it
	p.keepTime(c)
	if p.has(&c.line) {
		t.Fatal("the line clock runs while the server does not read the client")
	}
	c.wantRead = true
	p.keepTime(c)
	if !p.has(&c.line) || !c.line.when.Equal(p.now.Add(p.lineFor)) {
		t.Fatalf("the line clock did not start again when the server read the client again: %v", c.line.when)
	}
	p.stopping = true
	p.keepTime(c)
	if p.Len() != 0 {
		t.Fatalf("a stopping server still keeps %d of the client's deadlines", p.Len())
	}
}
