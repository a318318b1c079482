//go:build unix

package replay

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"muxlab/tracing"
	"muxlab/tracing/scenario"
)

func TestMain(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

// floodServer builds testdata/flood: a server that prints as many trace lines as it is told, then
// answers "nope\n"; or, with -crash, dies at its first client.
func floodServer(t *testing.T) string {
	t.Helper()
	bin, err := Build(".", "./testdata/flood")
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// wantHello is a scenario the flood server fails: it answers "nope\n".
func wantHello(t *testing.T) *scenario.Scenario {
	t.Helper()
	sc, err := scenario.Parse("runaway.txt", "connect c1\nexpect c1 \"hello\\n\"\n")
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

// A replay that fails after the server printed 400,000 trace lines says so in a few dozen lines (the
// transcript's first 20 and last 40), and keeps the transcript, cut to its first and last 4 MiB, in a
// file that outlives the test.
func TestFailureAfterAFloodIsBoundedAndKeepsTheTranscript(t *testing.T) {
	const flood = 400000 // about 10 MB of trace, more than KeepHead+KeepTail
	res, err := Run(floodServer(t), wantHello(t), "-lines", strconv.Itoa(flood))
	var f *Failure
	if !errors.As(err, &f) {
		t.Fatalf("want a *Failure, got %v", err)
	}
	if f.Kept != "" {
		t.Cleanup(func() { os.Remove(f.Kept) })
	}
	total := flood + 3 // listen, >> c1 connect, accept; the failed expectation adds no line
	msg := err.Error()
	t.Logf("the failure, as a test or the replay command shows it:\n%s", msg)
	if n := strings.Count(msg, "\n") + 1; n > excerptHead+excerptTail+5 {
		t.Errorf("the failure takes %d lines", n)
	}
	for _, want := range []string{
		`c1 expected "hello\n", got "nope\n"`,
		fmt.Sprintf("its first 20 and last 40 of %d lines:\nlisten     listener\n>> c1 connect\naccept     c1\n", total),
		fmt.Sprintf("flood      c1 line 17\n... %d lines cut ...\nflood      c1 line %d\n", total-60, flood-39),
		fmt.Sprintf("flood      c1 line %d\n(the whole transcript is in %s)", flood, f.Kept),
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("the failure does not say\n%s", want)
		}
	}

	// The file is where a student can find it after the test, named after step, scenario and server.
	if dir := filepath.Join(os.TempDir(), "muxlab-transcripts"); filepath.Dir(f.Kept) != dir {
		t.Errorf("transcript kept in %s, want a file in %s", f.Kept, dir)
	}
	if !regexp.MustCompile(`^flood-runaway-[0-9]+\.trace$`).MatchString(filepath.Base(f.Kept)) {
		t.Errorf("kept file %s is not named STEP-SCENARIO-PID.trace", f.Kept)
	}
	kept, err := os.ReadFile(f.Kept)
	if err != nil {
		t.Fatal(err)
	}
	if len(kept) > KeepHead+KeepTail+100 {
		t.Errorf("kept file has %d bytes, want at most about %d", len(kept), KeepHead+KeepTail)
	}
	if len(res.Transcript) != len(kept) {
		t.Errorf("the replay holds a %d-byte transcript, want the %d bytes it kept", len(res.Transcript), len(kept))
	}
	if !strings.HasPrefix(string(kept), "listen     listener\n>> c1 connect\naccept     c1\nflood      c1 line 1\n") ||
		!strings.HasSuffix(string(kept), fmt.Sprintf("flood      c1 line %d\n", flood)) {
		t.Errorf("kept file does not hold the transcript's beginning and end")
	}
	// The lines it holds and the lines its marker says were cut are every line of the transcript.
	m := regexp.MustCompile(`(?m)^\.\.\. ([0-9]+) lines cut \([0-9]+ bytes\) \.\.\.$`).FindStringSubmatch(string(kept))
	if m == nil {
		t.Fatal("kept file has no marker of what was cut")
	}
	cut, _ := strconv.Atoi(m[1])
	if held := strings.Count(string(kept), "\n") - 1; held+cut != total {
		t.Errorf("kept file holds %d lines and says %d were cut: %d, want %d", held, cut, held+cut, total)
	}
}

// A server that dies during a replay is reported with its exit status and its last words on stderr,
// not only as a connection the client saw close.
func TestFailureOfACrashedServerShowsItsExitAndStderr(t *testing.T) {
	_, err := Run(floodServer(t), wantHello(t), "-crash")
	var f *Failure
	if !errors.As(err, &f) {
		t.Fatalf("want a *Failure, got %v", err)
	}
	msg := err.Error()
	t.Logf("the failure:\n%s", msg)
	if f.Exit != "exit status 1" {
		t.Errorf("exit = %q, want exit status 1", f.Exit)
	}
	want := "flood: complaint 4\nflood: complaint 5\nflood: complaint 6\nflood: complaint 7\nflood: select: bad file descriptor\n"
	if f.Stderr != want {
		t.Errorf("stderr shown:\n%s\nwant its last 5 lines:\n%s", f.Stderr, want)
	}
	for _, want := range []string{"the server exited (exit status 1)", "    flood: select: bad file descriptor", "transcript so far:\n"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the failure does not say %q", want)
		}
	}
	if strings.Contains(msg, "complaint 3") {
		t.Errorf("the failure shows more than the last 5 lines of stderr")
	}
	if f.Kept != "" {
		t.Errorf("a short transcript is shown whole, yet it was kept in %s", f.Kept)
	}
}

// A clip holds a short text whole, and of a long one its head, a bounded tail and a count of the
// lines between: however much is written, what it holds stays bounded.
func TestClipKeepsHeadAndTailOfALongText(t *testing.T) {
	short := newClip(100, 100)
	fmt.Fprint(short, "a\nb\n")
	if got := short.String(); got != "a\nb\n" {
		t.Fatalf("short text held as %q", got)
	}

	c := newClip(100, 100)
	const n = 10000
	var all strings.Builder
	for i := 1; i <= n; i++ {
		line := fmt.Sprintf("line %d\n", i)
		all.WriteString(line)
		if i%3 == 0 { // writes that end mid-line, as pipe reads do
			fmt.Fprint(c, all.String())
			all.Reset()
		}
		if len(c.head) > 100 || len(c.tail) > 150 {
			t.Fatalf("after %d lines the clip holds %d+%d bytes", i, len(c.head), len(c.tail))
		}
	}
	fmt.Fprint(c, all.String())
	got := c.String()
	if !strings.HasPrefix(got, "line 1\nline 2\n") || !strings.HasSuffix(got, "line 9999\nline 10000\n") {
		t.Fatalf("clip lost the beginning or the end:\n%s", got)
	}
	lines := tracing.Lines(got)
	cut := fmt.Sprintf("... %d lines cut (", n-(len(lines)-1))
	if !strings.Contains(got, "\n"+cut) {
		t.Fatalf("clip does not say that %q:\n%s", cut, got)
	}
	if got := excerpt(got, c.lines, 2, 3); got != fmt.Sprintf("line 1\nline 2\n... %d lines cut ...\nline 9998\nline 9999\nline 10000\n", n-5) {
		t.Fatalf("excerpt:\n%s", got)
	}
}
