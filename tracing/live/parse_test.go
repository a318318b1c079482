package live

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// Every line of every step's golden transcripts parses into a known kind: the page can draw any step.
// And every kind but the live view's own (and "unknown") occurs in some golden, so that the per-kind
// cases below are not the only evidence for it.
func TestEveryGoldenLineParses(t *testing.T) {
	goldens, err := filepath.Glob("../../step*/testdata/*.trace")
	if err != nil || len(goldens) == 0 {
		t.Fatalf("no golden transcripts found (%v)", err)
	}
	seen := map[string]bool{}
	steps := map[string]bool{}
	for _, g := range goldens {
		text, err := os.ReadFile(g)
		if err != nil {
			t.Fatal(err)
		}
		steps[filepath.Base(filepath.Dir(filepath.Dir(g)))] = true
		for _, e := range Parse(string(text)) {
			if e.Kind == "unknown" {
				t.Errorf("%s:%d: unknown line %q", g, e.N+1, e.Text)
			}
			if _, ok := Kinds[e.Kind]; !ok {
				t.Errorf("%s:%d: kind %q is not in Kinds", g, e.N+1, e.Kind)
			}
			seen[e.Kind] = true
		}
	}
	if len(steps) != 10 {
		t.Errorf("goldens of %d steps, want all 10: %v", len(steps), steps)
	}
	liveOnly := map[string]bool{"unknown": true, "resume": true} // resume: after a slow reader reads again, never in a golden
	for kind := range Kinds {
		if !seen[kind] && !liveOnly[kind] {
			t.Errorf("kind %q occurs in no golden", kind)
		}
	}
}

// One line of each kind, taken apart field by field (lines from the goldens of the step named).
func TestParseLineKinds(t *testing.T) {
	cases := []struct {
		line string
		want Event
	}{
		// step01
		{"listen     listener", Event{Kind: "listen", Sock: "listener"}},
		{"block      read c2", Event{Kind: "block", Op: "read", Sock: "c2"}},
		// step02, step03
		{"select     read=[listener c1] write=[c2] except=[]", Event{Kind: "select", Read: []string{"listener", "c1"}, Write: []string{"c2"}}},
		{"ready      read=[] write=[c1 c2] except=[]", Event{Kind: "ready", Write: []string{"c1", "c2"}}},
		{"accept     c3", Event{Kind: "accept", Sock: "c3"}},
		{"accept     listener error EMFILE", Event{Kind: "accept", Sock: "listener", Result: "EMFILE", Detail: "error EMFILE"}},
		{`read       c1 4 bytes "123\n"`, Event{Kind: "read", Sock: "c1", Bytes: 4, Data: `"123\n"`, Detail: `4 bytes "123\n"`}},
		{"read       c1 EOF", Event{Kind: "read", Sock: "c1", Result: "EOF", Detail: "EOF"}},
		{"write      c1 27344 of 30000 bytes", Event{Kind: "write", Sock: "c1", Bytes: 27344, Of: 30000, Detail: "27344 of 30000 bytes"}},
		{"write      c1 EAGAIN", Event{Kind: "write", Sock: "c1", Result: "EAGAIN", Detail: "EAGAIN"}},
		{"queue      c1 +30000 bytes, 62656 pending", Event{Kind: "queue", Sock: "c1", Bytes: 30000, Pending: 62656, Detail: "+30000 bytes, 62656 pending"}},
		{"unqueue    c1 -27344 bytes, 2656 pending", Event{Kind: "unqueue", Sock: "c1", Bytes: 27344, Pending: 2656, Detail: "-27344 bytes, 2656 pending"}},
		{"pause      c1 reading: 92656 pending >= high-water 65536", Event{Kind: "pause", Sock: "c1", Pending: 92656, Limit: 65536, Detail: "reading: 92656 pending >= high-water 65536"}},
		{"resume     c1 reading: 16000 pending < low-water 16384", Event{Kind: "resume", Sock: "c1", Pending: 16000, Limit: 16384, Detail: "reading: 16000 pending < low-water 16384"}},
		{"finish     c1 20000 bytes still to send, then close", Event{Kind: "finish", Sock: "c1", Pending: 20000, Detail: "20000 bytes still to send, then close"}},
		{"drop       c1 8192 pending bytes", Event{Kind: "drop", Sock: "c1", Pending: 8192, Detail: "8192 pending bytes"}},
		{"close      c1 (reset)", Event{Kind: "close", Sock: "c1", Reason: "reset", Detail: "(reset)"}},
		{"signal     SIGTERM: stop accepting, send what is queued (at most 5s), then exit", Event{Kind: "signal", Detail: "SIGTERM: stop accepting, send what is queued (at most 5s), then exit"}},
		// step04
		{"join       c1 as guest1", Event{Kind: "join", Sock: "c1", Detail: "as guest1"}},
		{"nick       c2 guest2 is now bob", Event{Kind: "nick", Sock: "c2", Detail: "guest2 is now bob"}},
		{"leave      c2 bob left", Event{Kind: "leave", Sock: "c2", Reason: "bob left", Detail: "bob left"}},
		{"too-slow   c2 socket full and 16448 bytes pending >= limit 16384", Event{Kind: "too-slow", Sock: "c2", Pending: 16448, Limit: 16384, Detail: "socket full and 16448 bytes pending >= limit 16384"}},
		{"too-long   c1 line over 40 bytes: refused, skipped to its newline", Event{Kind: "too-long", Sock: "c1", Detail: "line over 40 bytes: refused, skipped to its newline"}},
		{"linger     c1 all sent, FIN sent: reading until the client closes", Event{Kind: "linger", Sock: "c1", Detail: "all sent, FIN sent: reading until the client closes"}},
		// step05, step06
		{"epoll_ctl  MOD c1 IN|OUT|RDHUP|ET", Event{Kind: "epoll_ctl", Op: "MOD", Sock: "c1", Flags: "IN|OUT|RDHUP|ET"}},
		{"epoll_wait interest=3", Event{Kind: "epoll_wait", Count: 3}},
		{"ready      c1=IN|HUP|RDHUP c2=OUT", Event{Kind: "ready", Ready: []Readiness{{"c1", "IN|HUP|RDHUP"}, {"c2", "OUT"}}}},
		{"ready      (none)", Event{Kind: "ready", Ready: []Readiness{}}},
		{"owed       c1 read budget spent: read again next turn", Event{Kind: "owed", Sock: "c1", Detail: "read budget spent: read again next turn"}},
		// step07
		{"epoll_wait interest=4 until c1 idle", Event{Kind: "epoll_wait", Count: 4, Until: "c1 idle"}},
		{"timeout    c2 line", Event{Kind: "timeout", Sock: "c2", Reason: "line", Detail: "line"}},
		// step08
		{"submit     send c1 69 bytes", Event{Kind: "submit", Op: "send", Sock: "c1", Bytes: 69}},
		{"submit     cancel recv c2", Event{Kind: "submit", Op: "cancel recv", Sock: "c2"}},
		{"submit     timeout 5s", Event{Kind: "submit", Op: "timeout", Detail: "5s"}},
		{"enter      in-flight=4", Event{Kind: "enter", Count: 4}},
		{"complete   recv c1 4", Event{Kind: "complete", Op: "recv", Sock: "c1", Bytes: 4, Result: "4"}},
		{"complete   accept listener ok (more)", Event{Kind: "complete", Op: "accept", Sock: "listener", Result: "ok", Detail: "(more)"}},
		{"complete   send c2 ECONNRESET", Event{Kind: "complete", Op: "send", Sock: "c2", Result: "ECONNRESET"}},
		{"complete   timeout ETIME", Event{Kind: "complete", Op: "timeout", Result: "ETIME"}},
		// step09
		{"L1 epoll_wait interest=2", Event{Loop: "L1", Kind: "epoll_wait", Count: 2}},
		{"L0 pass       c2 to L1", Event{Loop: "L0", Kind: "pass", Sock: "c2", Peer: "L1"}},
		{"L1 adopt      c2 from L0", Event{Loop: "L1", Kind: "adopt", Sock: "c2", Peer: "L0"}},
		{"L0 post       L1 2 message(s)", Event{Loop: "L0", Kind: "post", Peer: "L1", Count: 2}},
		{`L1 deliver    from L0 "* guest1 joined"`, Event{Loop: "L1", Kind: "deliver", Peer: "L0", Data: `"* guest1 joined"`}},
		{"L0 deliver    c3 from L1 (private)", Event{Loop: "L0", Kind: "deliver", Sock: "c3", Peer: "L1", Data: "(private)"}},
		// the clients, in replayed and live transcripts
		{">> c1 connect", Event{Kind: "client", Op: "connect", Sock: "c1"}},
		{`>> c1 send "123\n"`, Event{Kind: "client", Op: "send", Sock: "c1", Bytes: 4, Data: `"123\n"`}},
		{">> c1 send 30000 bytes", Event{Kind: "client", Op: "send", Sock: "c1", Bytes: 30000}},
		{">> c1 stop reading", Event{Kind: "client", Op: "stop reading", Sock: "c1"}},
		{">> c1 resume reading", Event{Kind: "client", Op: "resume reading", Sock: "c1"}},
		{">> c1 reset (SO_LINGER 0)", Event{Kind: "client", Op: "reset", Sock: "c1", Detail: "(SO_LINGER 0)"}},
		{">> signal TERM", Event{Kind: "client", Op: "signal", Detail: "TERM"}},
		{`<< c2 "hello?\n"`, Event{Kind: "received", Sock: "c2", Bytes: 7, Data: `"hello?\n"`}},
		{"<< c1 180000 bytes", Event{Kind: "received", Sock: "c1", Bytes: 180000}},
		{`<< c1 4 bytes "123\n"`, Event{Kind: "received", Sock: "c1", Bytes: 4, Data: `"123\n"`}},
		{"<< c2 nothing for 300ms", Event{Kind: "received", Sock: "c2", Result: "nothing", Detail: "300ms"}},
		{"<< c1 EOF", Event{Kind: "received", Sock: "c1", Result: "EOF"}},
		{"<< server exit 0", Event{Kind: "exit", Result: "0"}},
		// and what is not a line of the format
		{"hello world", Event{Kind: "unknown", Detail: "hello world"}},
		{"write      c1 lots", Event{Kind: "unknown", Detail: "write      c1 lots"}},
	}
	kinds := map[string]bool{}
	for _, c := range cases {
		c.want.Text = c.line
		got := ParseLine(c.line)
		if d := cmp.Diff(c.want, got, cmpopts.EquateEmpty()); d != "" {
			t.Errorf("ParseLine(%q) (-want +got):\n%s", c.line, d)
		}
		kinds[got.Kind] = true
	}
	for kind := range Kinds {
		if !kinds[kind] {
			t.Errorf("no case of kind %q", kind)
		}
	}
}
