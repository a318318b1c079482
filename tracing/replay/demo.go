//go:build unix

package replay

import (
	"fmt"
	"io"
	"os"

	"muxlab/tracing"
	"muxlab/tracing/scenario"
)

// Demo is what a step's -demo flag runs: it starts this very program again as the server (on a free
// loopback port), plays the step's scenario against it with real clients, and prints the transcript and
// what each client received. It returns the exit status for main.
func Demo(w io.Writer, step, scenarioName, scenarioText string, serverArgs ...string) int {
	sc, err := scenario.Parse(scenarioName, scenarioText)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s -demo: %v\n", step, err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s -demo: cannot find this program to start it as the server: %v\n", step, err)
		return 1
	}
	fmt.Fprintf(w, "%s demo: %s, played by real clients on loopback against this program.\n", step, scenarioName)
	fmt.Fprintf(w, "Lines \">> cN ...\" are what a client did, \"<< cN ...\" what it received; the rest is the server's trace.\n\n")
	res, err := Run(self, sc, serverArgs...)
	if err != nil { // a *Failure: the transcript's start and end, the server's last words
		fmt.Fprintf(os.Stderr, "%s -demo failed: %v\n", step, err)
		return 1
	}
	fmt.Fprint(w, res.Transcript)
	fmt.Fprintf(w, "\nWhat each client saw:\n")
	for _, c := range res.Clients {
		fmt.Fprintf(w, "  %-4s %d bytes %s\n", c.Name+":", len(c.Got), tracing.Quote(c.Got))
	}
	return 0
}
