//go:build unix

package live

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"muxlab/tracing/tracetest"
)

func TestMain(m *testing.M) { tracetest.Main(m) }

// root is the module's folder, where the steps are.
const root = "../.."

func get(t *testing.T, srv *httptest.Server, path string, status int, v any) {
	t.Helper()
	res, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != status {
		t.Fatalf("GET %s: status %d, want %d", path, res.StatusCode, status)
	}
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

func post(t *testing.T, srv *httptest.Server, path string, body string, status int, v any) {
	t.Helper()
	ctype := "application/x-www-form-urlencoded"
	if strings.HasPrefix(body, "{") {
		ctype = "application/json"
	}
	res, err := http.Post(srv.URL+path, ctype, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != status {
		var e map[string]string
		json.NewDecoder(res.Body).Decode(&e)
		t.Fatalf("POST %s %s: status %d (%s), want %d", path, body, res.StatusCode, e["error"], status)
	}
	if v != nil {
		if err := json.NewDecoder(res.Body).Decode(v); err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
	}
}

func newServer(t *testing.T) (*Server, *httptest.Server) {
	s := New(root)
	hs := httptest.NewServer(s) // on 127.0.0.1, a free port
	t.Cleanup(func() {
		hs.Close()
		s.Close()
	})
	return s, hs
}

// The list of steps: all ten, each with its own scenarios, and from step05 on those of step03 and
// step04 it borrows (the ones its goldens come from).
func TestStepsAndScenarios(t *testing.T) {
	_, hs := newServer(t)
	var steps []Step
	get(t, hs, "/api/steps", 200, &steps)
	var names []string
	for _, st := range steps {
		names = append(names, st.Name)
	}
	want := []string{"step01", "step02", "step03", "step04", "step05", "step06", "step07", "step08", "step09", "step10"}
	if !slices.Equal(names, want) {
		t.Fatalf("steps %v, want %v", names, want)
	}
	has := func(step, scenario, service string) {
		t.Helper()
		st, _ := find(steps, step)
		sc, ok := scenarioOf(st, scenario)
		if !ok || sc.Service != service {
			t.Errorf("%s: scenario %s (%s) missing or wrong: %+v", step, scenario, service, st.Scenarios)
		}
	}
	has("step01", "seed", "echo")
	has("step02", "stall", "echo")
	has("step03", "slow-reader", "echo")
	has("step04", "slow", "room")
	has("step05", "echo-seed", "echo")        // its own copy of step03's seed
	has("step05", "echo-slow-reader", "echo") // step03's, borrowed
	has("step05", "room-framing", "room")     // step04's, borrowed
	has("step07", "timers", "room")
	has("step09", "span", "room")
	st, _ := find(steps, "step05")
	if _, dup := scenarioOf(st, "room-room"); dup {
		t.Error("step05 lists step04's room as well as its own copy")
	}
	if args := ServerArgs("step09", Scenario{Service: "echo"}, nil); !slices.Equal(args, []string{"-echo", "-loops", "2"}) {
		t.Errorf("step09's echo args: %q", args)
	}
}

// A replayed transcript, as the events the page draws: step03's slow reader, whose c1 queue passes
// the high-water mark and pauses, while c2 gets its echo.
func TestReplayEvents(t *testing.T) {
	_, hs := newServer(t)
	var p Played
	get(t, hs, "/api/replay?step=step03&scenario=slow-reader", 200, &p)
	if p.Error != "" {
		t.Fatalf("replay failed: %s", p.Error)
	}
	if !slices.Equal(p.Args, []string{"-sndbuf", "16384"}) {
		t.Errorf("args %q, want the scenario's", p.Args)
	}
	var paused, echoed, waits bool
	for i, e := range p.Events {
		if e.N != i || e.Kind == "unknown" {
			t.Errorf("event %d: %+v", i, e)
		}
		paused = paused || e.Kind == "pause" && e.Sock == "c1" && e.Pending >= e.Limit && e.Limit == 65536
		echoed = echoed || e.Kind == "received" && e.Sock == "c2" && e.Data == `"hello?\n"`
		waits = waits || e.Kind == "select" && slices.Contains(e.Write, "c1")
	}
	if !paused || !echoed || !waits {
		t.Errorf("c1 paused: %v, c2 echoed: %v, c1 watched for writing: %v", paused, echoed, waits)
	}
}

// Two steps on one scenario: the rows align equal lines and mark the others.
func TestCompare(t *testing.T) {
	_, hs := newServer(t)
	var c Compare
	get(t, hs, "/api/compare?a=step02&b=step03&scenario=seed", 200, &c)
	var diff, same int
	for _, r := range c.Rows {
		switch {
		case r.Diff && (r.A < 0) == (r.B < 0):
			t.Fatalf("a differing row with both sides: %+v", r)
		case r.Diff:
			diff++
		default:
			same++
			if c.A.Events[r.A].Text != c.B.Events[r.B].Text {
				t.Errorf("row %+v: %q and %q marked equal", r, c.A.Events[r.A].Text, c.B.Events[r.B].Text)
			}
		}
	}
	if diff == 0 || same == 0 {
		t.Errorf("%d differing and %d equal rows: step03 adds the signals pipe to step02's select", diff, same)
	}
	var e map[string]string
	get(t, hs, "/api/compare?a=step04&b=step02&scenario=room", 400, &e)
	if !strings.Contains(e["error"], "serves the echo only") {
		t.Errorf("a room scenario on step02: %q", e["error"])
	}
	get(t, hs, "/api/compare?a=step02&b=step04&scenario=seed", 400, &e)
	if !strings.Contains(e["error"], "step04 serves the chat room only") {
		t.Errorf("an echo scenario on step04: %q", e["error"])
	}
}

// Bad input gets a message that says what is wrong and what would be right.
func TestBadRequests(t *testing.T) {
	_, hs := newServer(t)
	for _, c := range []struct {
		path   string
		status int
		want   string
	}{
		{"/api/replay?step=step99&scenario=seed", 404, `unknown step "step99" (the steps: step01, step02`},
		{"/api/replay?step=step02&scenario=nope", 404, `step02 has no scenario "nope" (its scenarios: seed, stall)`},
		{"/api/compare?a=step02&b=nope&scenario=seed", 404, `unknown step "nope"`},
	} {
		var e map[string]string
		get(t, hs, c.path, c.status, &e)
		if !strings.Contains(e["error"], c.want) {
			t.Errorf("%s: %q, want %q", c.path, e["error"], c.want)
		}
	}
	var e map[string]string
	post(t, hs, "/api/live", "step=step02&args=-addr+0.0.0.0:80", 400, &e)
	post(t, hs, "/api/live/999/act", `{"verb":"connect"}`, 404, &e)
	if !strings.Contains(e["error"], "no live session 999") {
		t.Errorf("an action on no session: %q", e["error"])
	}
}

// A step that fails to start: the message says so, with the server's last words.
func TestStepThatExits(t *testing.T) {
	_, hs := newServer(t)
	var e map[string]string
	post(t, hs, "/api/live", "step=step02&args=-nosuchflag", 500, &e)
	if !strings.Contains(e["error"], "step02 did not start") || !strings.Contains(e["error"], "it exited (exit status 2)") {
		t.Errorf("a server that exits at once: %q", e["error"])
	}
}

// A step that does not build: replay and live both say so, with the compiler's words.
func TestStepThatDoesNotBuild(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"go.mod":                           "module muxlab\n\ngo 1.26\n",
		"step99-broken/main.go":            "package main\n\nfunc main() { undefinedThing() }\n",
		"step99-broken/scenarios/seed.txt": "connect c1\n",
	}
	for name, text := range files {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := New(dir)
	hs := httptest.NewServer(s)
	defer s.Close()
	defer hs.Close()
	var e map[string]string
	get(t, hs, "/api/replay?step=step99&scenario=seed", 500, &e)
	if !strings.Contains(e["error"], "step99 does not build") || !strings.Contains(e["error"], "undefinedThing") {
		t.Errorf("replay of a broken step: %q", e["error"])
	}
	post(t, hs, "/api/live", "step=step99", 500, &e)
	if !strings.Contains(e["error"], "step99 does not build") {
		t.Errorf("live session of a broken step: %q", e["error"])
	}
}

// sse reads a live session's server-sent events.
type sse struct {
	t   *testing.T
	res *http.Response
	in  *bufio.Reader
}

func openEvents(t *testing.T, hs *httptest.Server, id string) *sse {
	// Every read of the stream below blocks until the next event: the context bounds them all.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", hs.URL+"/api/live/"+id+"/events", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("events: Content-Type %q", ct)
	}
	return &sse{t: t, res: res, in: bufio.NewReader(res.Body)}
}

// next returns the next event's name and data: the server sends each line as it happens.
func (s *sse) next() (string, string) {
	s.t.Helper()
	var name, data string
	for {
		line, err := s.in.ReadString('\n')
		if err != nil {
			s.t.Fatalf("event stream: %v (after %q %q)", err, name, data)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "" && name != "":
			return name, data
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		}
	}
}

// until reads line events until each of oks has been satisfied by one, in any order: a client's
// bytes can arrive before the server has printed the line of the write that sent them.
func (s *sse) until(what string, oks ...func(Event) bool) {
	s.t.Helper()
	left := slices.Clone(oks)
	for len(left) > 0 {
		name, data := s.next()
		if name != "line" {
			continue
		}
		var e Event
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			s.t.Fatal(err)
		}
		left = slices.DeleteFunc(left, func(ok func(Event) bool) bool { return ok(e) })
	}
}

// The event stream of a live session: the server's trace and the clients' actions and receipts as
// structured events, as they happen; and when the page goes away, the server and its port are gone.
func TestLiveSessionStream(t *testing.T) {
	s, hs := newServer(t)
	var se SessionInfo
	post(t, hs, "/api/live", "step=step03&args=-sndbuf+4096", 200, &se)
	events := openEvents(t, hs, se.ID)
	events.until("the first wait", func(e Event) bool { return e.Kind == "select" })

	act := func(a string) Status {
		var st Status
		post(t, hs, "/api/live/"+se.ID+"/act", a, 200, &st)
		return st
	}
	if st := act(`{"verb":"connect"}`); st.State != "idle" {
		t.Errorf("after connect: %+v", st)
	}
	events.until("c1 accepted", func(e Event) bool { return e.Kind == "accept" && e.Sock == "c1" })
	act(`{"verb":"send","client":"c1","text":"hi"}`)
	events.until("c1's line read, and its echo received",
		func(e Event) bool { return e.Kind == "read" && e.Sock == "c1" && e.Data == `"hi\n"` },
		func(e Event) bool { return e.Kind == "received" && e.Sock == "c1" && e.Data == `"hi\n"` })
	act(`{"verb":"reset","client":"c1"}`)
	events.until("c1 closed", func(e Event) bool { return e.Kind == "close" && e.Sock == "c1" })

	// The page goes away: closing the stream ends the session.
	events.res.Body.Close()
	waitGone(t, s, se)
}

// The live view's lesson on step03: a client that stops reading is sent more than its buffers hold;
// the queue takes it up to the high-water mark and the loop stops reading it, while c2 is served.
func TestLiveQueueTakesIt(t *testing.T) {
	_, hs := newServer(t)
	var se SessionInfo
	post(t, hs, "/api/live", "step=step03&args=-sndbuf+4096", 200, &se)
	events := openEvents(t, hs, se.ID)
	for _, a := range []string{`{"verb":"connect"}`, `{"verb":"connect"}`, `{"verb":"stop-reading","client":"c1"}`,
		`{"verb":"send-bytes","client":"c1","bytes":200000}`, `{"verb":"send","client":"c2","text":"hello?"}`} {
		post(t, hs, "/api/live/"+se.ID+"/act", a, 200, nil)
	}
	events.until("c1's queue paused, and c2's echo",
		func(e Event) bool { return e.Kind == "pause" && e.Sock == "c1" && e.Pending >= e.Limit },
		func(e Event) bool { return e.Kind == "received" && e.Sock == "c2" && e.Data == `"hello?\n"` })
}

// SIGTERM from the page: the server says so, finishes and exits; the page is told how it ended.
func TestLiveSessionSignal(t *testing.T) {
	s, hs := newServer(t)
	var se SessionInfo
	post(t, hs, "/api/live", "step=step03", 200, &se)
	events := openEvents(t, hs, se.ID)
	post(t, hs, "/api/live/"+se.ID+"/act", `{"verb":"signal"}`, 200, nil)
	events.until("the signal line", func(e Event) bool { return e.Kind == "signal" })
	events.until("the exit", func(e Event) bool { return e.Kind == "exit" && e.Result == "0" })
	for {
		name, data := events.next()
		if name == "status" && strings.Contains(data, `"state":"exited"`) {
			break
		}
	}
	var e map[string]string
	post(t, hs, "/api/live/"+se.ID+"/act", `{"verb":"connect"}`, 400, &e)
	if !strings.Contains(e["error"], "the server has exited") {
		t.Errorf("an action after the exit: %q", e["error"])
	}
	s.Close()
	waitGone(t, s, se)
}

// Closing the live view (what SIGINT does to the command) ends every session: no child, no socket.
func TestCloseEndsSessions(t *testing.T) {
	s, hs := newServer(t)
	var a, b SessionInfo
	post(t, hs, "/api/live", "step=step02", 200, &a)
	post(t, hs, "/api/live", "step=step05&args=-echo", 200, &b)
	post(t, hs, "/api/live/"+b.ID+"/act", `{"verb":"connect"}`, 200, nil)
	s.Close()
	waitGone(t, s, a)
	waitGone(t, s, b)
	var e map[string]string
	post(t, hs, "/api/live", "step=step02", 500, &e)
}

// waitGone checks that a session's server is gone (Close waits for it: the pid must not exist at
// once) and its port refuses connections.
func waitGone(t *testing.T, s *Server, se SessionInfo) {
	t.Helper()
	s.mu.Lock()
	live := s.sessions[se.ID]
	s.mu.Unlock()
	if live != nil {
		// The stream's end is noticed by its handler's goroutine: wait for it to end the session.
		select {
		case <-live.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("session %s still open 10 s after its page went away", se.ID)
		}
		select {
		case <-live.srv.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("session %s ended, its server still runs", se.ID)
		}
	}
	if err := syscall.Kill(se.Pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("server pid %d still exists after its session ended (kill 0: %v)", se.Pid, err)
	}
	if err := syscall.Kill(-se.Pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("server's process group %d still exists (kill 0: %v)", se.Pid, err)
	}
	if c, err := net.Dial("tcp", se.Addr); err == nil {
		c.Close()
		t.Errorf("the server's port %s still accepts connections", se.Addr)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", se.Pid)); err == nil {
		t.Errorf("/proc/%d still exists", se.Pid)
	}
}
