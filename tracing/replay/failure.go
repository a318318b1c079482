//go:build unix

package replay

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// A Failure is a replay that went wrong, told in a bounded number of lines: a broken server can print
// millions of trace lines before the replayer gives up, and they must not flood the terminal.
type Failure struct {
	Err     error
	Lines   int    // lines of the transcript so far
	Excerpt string // the transcript so far: whole, or its first and last lines around "... N lines cut ..."
	Kept    string // the file that holds the transcript when the excerpt cuts it ("" otherwise)
	Exit    string // how the server ended ("exit status 1") if it exited, else ""
	Stderr  string // the last lines of the server's stderr, if it exited or said more than where it listens
	keepErr error  // why the transcript could not be kept
}

// How many lines of the transcript a failure shows, from its beginning and from its end.
const (
	excerptHead = 20
	excerptTail = 40
)

// KeepDir is where a failed replay keeps a transcript too long to show. It is not a test's temporary
// folder, which is removed when the test ends, before anyone can read the file.
var KeepDir = filepath.Join(os.TempDir(), "muxlab-transcripts")

func (f *Failure) Error() string {
	var b strings.Builder
	b.WriteString(f.Summary())
	if f.Excerpt == "" {
		return b.String()
	}
	if f.Lines > excerptHead+excerptTail {
		fmt.Fprintf(&b, "\ntranscript so far: its first %d and last %d of %d lines:\n", excerptHead, excerptTail, f.Lines)
	} else {
		b.WriteString("\ntranscript so far:\n")
	}
	b.WriteString(strings.TrimSuffix(f.Excerpt, "\n"))
	if f.Kept != "" {
		fmt.Fprintf(&b, "\n(the whole transcript is in %s)", f.Kept)
	} else if f.keepErr != nil {
		fmt.Fprintf(&b, "\n(the whole transcript could not be kept: %v)", f.keepErr)
	}
	return b.String()
}

// Summary is the error without the transcript: what failed, and how the server ended and its last
// words on stderr.
func (f *Failure) Summary() string {
	switch {
	case f.Exit != "":
		return fmt.Sprintf("%v\nthe server exited (%s); %s", f.Err, f.Exit, lastWords(f.Stderr))
	case f.Stderr != "":
		return fmt.Sprintf("%v\nthe server is running; %s", f.Err, lastWords(f.Stderr))
	}
	return f.Err.Error()
}

func (f *Failure) Unwrap() error { return f.Err }

// Failure makes err, from a step of the session, into a *Failure. A server that is exiting is waited
// for first, so that a crash is reported as one, with its exit status, and not as a closed connection.
func (p *Session) Failure(err error) *Failure {
	f := &Failure{Err: err}
	if p.srv.Ended() {
		f.Exit = p.srv.ExitStatus()
	}
	p.flushTrace() // an exited server's last lines are in the pipe
	if stderr := p.srv.Stderr(); stderr != "" && (f.Exit != "" || strings.Count(stderr, "\n") > 1) {
		f.Stderr = lastLines(stderr, stderrLines)
	}
	text := p.out.String()
	f.Lines = p.out.lines
	f.Excerpt = excerpt(text, f.Lines, excerptHead, excerptTail)
	if f.Lines > excerptHead+excerptTail {
		name := fmt.Sprintf("%s-%s-%d.trace", p.step, p.scenario, p.srv.Pid())
		kept := filepath.Join(KeepDir, unsafeInName.ReplaceAllString(name, "_"))
		f.keepErr = os.MkdirAll(KeepDir, 0o755)
		if f.keepErr == nil {
			f.keepErr = os.WriteFile(kept, []byte(text), 0o644)
		}
		if f.keepErr == nil {
			f.Kept = kept
		}
	}
	return f
}

var unsafeInName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// stepName is the name of a step's binary, without the -N that Build adds.
func stepName(binary string) string {
	return buildSuffix.ReplaceAllString(filepath.Base(binary), "")
}

var buildSuffix = regexp.MustCompile(`-[0-9]+$`)
