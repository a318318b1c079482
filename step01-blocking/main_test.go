package main

import (
	"testing"

	"muxlab/tracing/tracetest"
)

func TestMain(m *testing.M) { tracetest.Main(m) }

// The seed's operation steps on a blocking server: the golden transcript shows the server blocked in
// read on c1 while c2 connects and sends.
func TestSeedScenario(t *testing.T) {
	tracetest.Golden(t, "seed")
}

// The second client's connect succeeds (the backlog), but its echo comes only after the first client
// leaves. Asserted on the replies, step by step.
func TestSecondClientWaitsForFirst(t *testing.T) {
	s := tracetest.Open(t, ".")
	tracetest.Do(t, s, `
connect c1
send c1 "123\n"
expect c1 "123\n"
connect c2 unnoticed
send c2 "345\n" unnoticed
expect-nothing c2 300ms`)
	if got := string(s.Client("c2").Got); got != "" {
		t.Fatalf("c2 got %q while c1 was still connected; a blocking server cannot answer it yet", got)
	}
	tracetest.Do(t, s, `
close c1
expect c2 "345\n"`)
}
