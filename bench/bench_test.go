//go:build linux

package main

import (
	"bytes"
	"slices"
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
	// Both placements ran: the main pass pinned, the shared pass after it. Pinned, every thread of
	// every server ran on the server's CPUs alone, and the generator on the others.
	if res.placed.name != pinned || res.shared == nil || res.shared.placed.name != shared {
		t.Fatalf("placements: main %q, shared pass %v; want pinned, then shared", res.placed.name, res.shared != nil)
	}
	for name, list := range res.placed.servers {
		if list != cpuList(res.placed.srvSet) && list != cpuRange(res.placed.srvSet) {
			t.Errorf("pinned: %s ran on CPUs %q, want %s", name, list, cpuList(res.placed.srvSet))
		}
	}
	if gen := res.placed.generator; len(res.placed.servers) == 0 || gen != cpuList(res.placed.genSet) && gen != cpuRange(res.placed.genSet) {
		t.Errorf("pinned: generator on %q (want %s), servers %v", res.placed.generator, cpuList(res.placed.genSet), res.placed.servers)
	}
	// Both chat workloads, in both passes: smoke's rooms are far too small to put anyone out, so every
	// line of every sender reaches every other member.
	want := smoke.chat.senders * smoke.chat.lines * (smoke.chat.members - 1)
	for _, pass := range []*results{res, res.shared} {
		for _, mode := range chatModes {
			for _, name := range res.chatNames {
				if c := pass.chat[mode][name]; c == nil || c.deliveries != want || slices.Max(c.missing) != 0 {
					t.Errorf("chat %s, %s, %s: %+v, want %d deliveries, none missing", pass.placed.name, mode, name, c, want)
				}
			}
		}
	}
	for pt, cells := range res.shared.echo {
		for name, c := range cells {
			if c.refused != "" || len(c.cpu) != smoke.shared.reps {
				t.Errorf("shared echo %d conns × %d B, %s: %d runs, refused %q", pt.conns, pt.size, name, len(c.cpu), c.refused)
			}
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
	for _, section := range []string{"## Echo", "## Scan", "```mermaid", "## Idle memory", "## Chat fan-out", "## Tracing cost", "## Fairness", "## Targets", "## Placement", "**Unpaced**", "## The shared placement"} {
		if !strings.Contains(page, section) {
			t.Errorf("report has no %q", section)
		}
	}
	if t.Failed() {
		t.Logf("progress:\n%s", log.String())
	}
}
