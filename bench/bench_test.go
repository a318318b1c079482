//go:build linux

package main

import (
	"bytes"
	"strings"
	"testing"

	"muxlab/tracing/tracetest"
)

func TestMain(m *testing.M) { tracetest.Main(m) }

// The smoke suite runs every workload briefly against every server in the checkout. It asserts no
// timing, only that the workloads ran and their checks held: every echoed byte matched (pingPong fails
// otherwise), every chat line arrived exactly once, and select refused the clients past FD_SETSIZE
// while the others held them all.
func TestSmoke(t *testing.T) {
	var log bytes.Buffer
	res, err := runSuite(smoke, &log)
	if err != nil {
		t.Fatalf("%v\nprogress:\n%s", err, log.String())
	}
	if len(res.echoNames) == 0 || len(res.chatNames) == 0 {
		t.Fatalf("no echo server or no chat room measured: %v, %v", res.echoNames, res.chatNames)
	}
	for pt, cells := range res.echo {
		for name, c := range cells {
			if c.refused != "" || len(c.cpu) != smoke.reps {
				t.Errorf("echo %d conns × %d B, %s: %d runs (want %d), refused %q", pt.conns, pt.size, name, len(c.cpu), smoke.reps, c.refused)
			}
		}
	}
	top := smoke.scanIdle[len(smoke.scanIdle)-1] // above FD_SETSIZE
	for _, name := range res.echoNames {
		c := res.scan[name][top]
		switch {
		case c == nil:
			t.Errorf("scan %s: nothing measured at %d idle", name, top)
		case strings.Contains(name, "select") && (c.refused == 0 || !strings.Contains(c.said, "1024")):
			t.Errorf("scan %s at %d idle: held %d, refused %d (%q); want clients past fd 1023 refused with a message", name, top, c.held, c.refused, c.said)
		case !strings.Contains(name, "select") && c.refused != 0:
			t.Errorf("scan %s at %d idle: refused %d (%q); want all held", name, top, c.refused, c.said)
		}
	}
	want := smoke.chat.senders * smoke.chat.lines * (smoke.chat.members - 1)
	for _, name := range res.chatNames {
		if c := res.chat[name]; c == nil || c.deliveries != want {
			t.Errorf("chat %s: %+v, want %d deliveries", name, c, want)
		}
	}
	for _, name := range res.fairNames {
		for _, r := range res.fair[name] {
			if r.sent == 0 || r.pings == 0 {
				t.Errorf("fairness %s: %d lines flooded, %d pings", name, r.sent, r.pings)
			}
			if !strings.Contains(name, "readbudget 0") && r.complete != smoke.fair.members {
				t.Errorf("fairness %s: %d of %d members received every line (%d put out)", name, r.complete, smoke.fair.members, r.putOut)
			}
		}
	}
	page := report(res)
	for _, section := range []string{"## Echo", "## Scan", "```mermaid", "## Idle memory", "## Chat fan-out", "## Tracing cost", "## Fairness", "## Targets"} {
		if !strings.Contains(page, section) {
			t.Errorf("report has no %q", section)
		}
	}
	if t.Failed() {
		t.Logf("progress:\n%s", log.String())
	}
}
