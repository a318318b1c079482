package main

import (
	"testing"

	"muxlab/tracing/tracetest"
)

func TestMain(m *testing.M) { tracetest.Main(m) }

// The seed's operation steps: both clients get their echo, and the trace is the golden one.
func TestSeedScenario(t *testing.T) {
	tracetest.Golden(t, "seed")
}
