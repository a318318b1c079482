//go:build unix

package live

// The page in a real browser: headless Chromium driven over the DevTools protocol on a pipe
// (--remote-debugging-pipe: JSON messages, each ended by a NUL byte, read on the browser's fd 3 and
// written on its fd 4), with no Go dependency beyond the standard library.

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"muxlab/tracing/tracetest"
)

// findChromium returns the browser's path, or skips the test (fails it under CI=1, where .ci/run
// has installed it).
func findChromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "1" {
		t.Fatal("no chromium on PATH, and CI=1: .ci/run installs it (apt-get install chromium)")
	}
	t.Skip("no chromium on PATH: the browser test needs it (apt-get install chromium)")
	return ""
}

// browser is a headless Chromium and one page in it.
type browser struct {
	t       *testing.T
	cmd     *exec.Cmd
	toIt    *os.File // our end of its fd 3
	fromIt  *os.File // our end of its fd 4
	session string   // the page's session, for the commands sent to it

	mu      sync.Mutex
	nextID  int
	waiting map[int]chan reply
	dead    error // why the pipe from the browser ended
}

type reply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// buildWithin bounds the waits that include building a step (go build, on a machine that may be
// running every other package's tests).
const buildWithin = 90 * time.Second

// callWithin bounds every command: a browser that stops answering fails the test, it does not hang it.
// The first ones wait for the browser to start, which took over 20 s on a loaded CI machine.
const callWithin = 60 * time.Second

func startBrowser(t *testing.T, path string) *browser {
	t.Helper()
	toR, toW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	fromR, fromW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
		"--no-first-run", "--no-default-browser-check",
		"--disable-extensions", "--disable-component-update", "--disable-background-networking", "--disable-sync", "--disable-default-apps", "--user-data-dir="+t.TempDir(), "about:blank")
	cmd.ExtraFiles = []*os.File{toR, fromW} // its fds 3 and 4
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	toR.Close()
	fromW.Close()
	b := &browser{t: t, cmd: cmd, toIt: toW, fromIt: fromR, waiting: map[int]chan reply{}}
	go b.readReplies()
	t.Cleanup(b.close)
	var target struct{ TargetID string }
	b.call("Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var attached struct{ SessionID string }
	b.call("Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached)
	b.session = attached.SessionID
	b.call("Emulation.setDeviceMetricsOverride", map[string]any{"width": 1400, "height": 950, "deviceScaleFactor": 1, "mobile": false}, nil)
	return b
}

// readReplies hands each reply to the call that waits for it; events are not used.
func (b *browser) readReplies() {
	in := bufio.NewReader(b.fromIt)
	for {
		msg, err := in.ReadBytes(0)
		if err != nil {
			b.mu.Lock()
			b.dead = err
			for id, ch := range b.waiting {
				close(ch)
				delete(b.waiting, id)
			}
			b.mu.Unlock()
			return
		}
		var m struct {
			ID int `json:"id"`
			reply
		}
		if json.Unmarshal(msg[:len(msg)-1], &m) != nil || m.ID == 0 {
			continue
		}
		b.mu.Lock()
		ch := b.waiting[m.ID]
		delete(b.waiting, m.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- m.reply
		}
	}
}

// call sends a command (to the page, once attached) and decodes its result into out.
func (b *browser) call(method string, params any, out any) {
	b.t.Helper()
	b.callWithin(method, params, out, callWithin)
}

// callWithin is call with its own bound, for a command that waits in the page.
func (b *browser) callWithin(method string, params any, out any, bound time.Duration) {
	b.t.Helper()
	b.mu.Lock()
	if b.dead != nil {
		b.mu.Unlock()
		b.t.Fatalf("%s: the browser is gone (%v)", method, b.dead)
	}
	b.nextID++
	id := b.nextID
	ch := make(chan reply, 1)
	b.waiting[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if b.session != "" {
		msg["sessionId"] = b.session
	}
	data, _ := json.Marshal(msg)
	if _, err := b.toIt.Write(append(data, 0)); err != nil {
		b.t.Fatalf("%s: %v", method, err)
	}
	select {
	case r, ok := <-ch:
		switch {
		case !ok:
			b.t.Fatalf("%s: the browser closed the pipe", method)
		case r.Error != nil:
			b.t.Fatalf("%s: %s", method, r.Error.Message)
		case out != nil:
			if err := json.Unmarshal(r.Result, out); err != nil {
				b.t.Fatalf("%s: %v", method, err)
			}
		}
	case <-time.After(bound):
		b.t.Fatalf("%s: no answer within %v", method, bound)
	}
}

// eval runs a JavaScript expression in the page (awaiting it if it is a promise) and returns its value.
func (b *browser) eval(expr string, out any) {
	b.t.Helper()
	b.evalWithin(expr, out, callWithin)
}

func (b *browser) evalWithin(expr string, out any, bound time.Duration) {
	b.t.Helper()
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	b.callWithin("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &r, bound)
	if e := r.ExceptionDetails; e != nil {
		b.t.Fatalf("%s: %s %s", expr, e.Text, e.Exception.Description)
	}
	if out != nil {
		if err := json.Unmarshal(r.Result.Value, out); err != nil {
			b.t.Fatalf("%s: %v (value %s)", expr, err, r.Result.Value)
		}
	}
}

// waitFor waits until the expression is true in the page, checking it in the page after every frame
// drawn or every 20 ms, for at most within; on timeout it fails with what says, and what the page
// shows.
func (b *browser) waitFor(what, cond string, within time.Duration) {
	b.t.Helper()
	var ok bool
	b.evalWithin(fmt.Sprintf(`new Promise((done) => {
		const until = Date.now() + %d;
		const check = () => {
			let v = false;
			try { v = !!(%s); } catch (e) {}
			if (v || Date.now() > until) done(v); else setTimeout(check, 20);
		};
		check();
	})`, within.Milliseconds(), cond), &ok, within+callWithin)
	if !ok {
		var shown string
		b.eval(`[...document.querySelectorAll(".error:not([hidden]), .message:not([hidden]), #live-status")].map((e) => e.textContent).join(" | ")`, &shown)
		b.t.Fatalf("waited %v for %s (%s); the page says: %s", within, what, cond, shown)
	}
}

func (b *browser) navigate(url string) {
	b.t.Helper()
	b.call("Page.navigate", map[string]any{"url": url}, nil)
	b.waitFor("the page to list the steps", `document.body.dataset.ready === "true"`, 10*time.Second)
}

func (b *browser) click(selector string) {
	b.t.Helper()
	var ok bool
	b.eval(fmt.Sprintf(`(() => { const e = document.querySelector(%q); if (!e || e.disabled) return false; e.click(); return true; })()`, selector), &ok)
	if !ok {
		b.t.Fatalf("no enabled %s to click", selector)
	}
}

// screenshot keeps a PNG of the page in dir/name.
func (b *browser) screenshot(dir, name string) string {
	b.t.Helper()
	var shot struct{ Data string }
	b.call("Page.captureScreenshot", map[string]any{"format": "png"}, &shot)
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		b.t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	return path
}

// close ends the browser and whatever it started (its renderers and helpers are in its process group).
func (b *browser) close() {
	b.mu.Lock()
	b.session = ""
	b.mu.Unlock()
	b.toIt.Close() // a browser on a pipe exits when the pipe closes
	exited := make(chan struct{})
	go func() {
		b.cmd.Wait()
		close(exited)
	}()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
	}
	syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	<-exited
	b.fromIt.Close()
}

// ScreenshotDir is where the browser test keeps its screenshots: a folder under the system's
// temporary one that outlives the test, and, with -update, docs/img as well (the README's pictures).
var ScreenshotDir = filepath.Join(os.TempDir(), "muxlab-live-screenshots")

// The page in a browser: step03's slow reader replayed to the end shows c1's queue at the pause and
// c2's echo; a live session on step02 shows a client that does not read stall the other one; two
// steps compared mark the lines that differ. Each leaves a screenshot.
func TestBrowser(t *testing.T) {
	if raceBuild {
		// The race detector checks this process, and the browser is another one: the page's server
		// is race-checked by this package's other tests, and the browser test runs without -race
		// in the README's test command.
		t.Skip("built with -race: the browser test runs in the plain go test ./...")
	}
	path := findChromium(t)
	s := New(root)
	hs := httptest.NewServer(s)
	defer s.Close()
	defer hs.Close()
	if err := os.MkdirAll(ScreenshotDir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := startBrowser(t, path)
	var shots []string

	// Replay: play step03's slow-reader to the end at the fastest speed.
	b.navigate(hs.URL + "/?mode=replay&step=step03&scenario=slow-reader")
	b.waitFor("the transcript (step03 built and replayed)", `document.getElementById("replay-pos").dataset.loaded === "true"`, buildWithin)
	b.eval(`(s => { s.value = 60; s.dispatchEvent(new Event("input")); })(document.getElementById("replay-speed"))`, nil)
	b.click("#replay-play")
	b.waitFor("the replay to play to its end", `(p => p.dataset.total > 0 && p.dataset.n === p.dataset.total)(document.getElementById("replay-pos"))`, 20*time.Second)
	var replayed struct {
		EverPaused      string
		High, Limit     int
		C2Lane, Current string
	}
	b.eval(`(() => {
		const c1 = document.getElementById("replay-view-sock-c1").dataset;
		return { EverPaused: c1.everPaused, High: Number(c1.high), Limit: Number(c1.limit),
			C2Lane: document.getElementById("replay-view-lane-c2").textContent,
			Current: document.querySelector("#replay-lines li.current").textContent };
	})()`, &replayed)
	if replayed.EverPaused != "true" || replayed.Limit != 65536 || replayed.High < replayed.Limit {
		t.Errorf("c1's queue did not reach the pause: %+v", replayed)
	}
	if !strings.Contains(replayed.C2Lane, `<< "hello?\n"`) {
		t.Errorf("c2's lane has no echo: %q", replayed.C2Lane)
	}
	if !strings.HasPrefix(replayed.Current, "<< c1 180000 bytes") {
		t.Errorf("the current line at the end is %q", replayed.Current)
	}
	// Back to where c1 pauses, for the picture.
	b.eval(`setReplay(replay.events.findIndex((e) => e.kind === "pause") + 1)`, nil)
	shots = append(shots, b.screenshot(ScreenshotDir, "live-replay.png"))

	// Live: step02, c1 stops reading and is sent more than the buffers hold; the server blocks in its
	// write to c1, and c2's echo waits until c1 reads again.
	b.navigate(hs.URL + "/?mode=live&step=step02")
	status := func() int {
		var seq int
		b.eval(`Number(document.getElementById("live-status").dataset.seq)`, &seq)
		return seq
	}
	// act clicks and waits for the action's status (each action reports one once the server has
	// settled, or has not reacted within its bound).
	act := func(selector string) {
		t.Helper()
		before := status()
		b.click(selector)
		b.waitFor(selector+"'s outcome", fmt.Sprintf(`Number(document.getElementById("live-status").dataset.seq) > %d`, before), 15*time.Second)
	}
	b.click("#live-start")
	b.waitFor("the server to start (step02 built)", `document.getElementById("live-status").dataset.state === "idle"`, buildWithin)
	act("#live-connect")
	act("#live-connect")
	b.waitFor("two clients' buttons", `document.querySelector('[data-client="c2"]')`, 5*time.Second)
	act(`[data-client="c1"] [data-act="stop-reading"]`)
	act(`[data-client="c1"] [data-act="send-bytes"]`)
	b.waitFor("step02 to block writing c1's echo (its last line: the read of c1, and no wait after it)",
		`/^read\s+c1 65536 bytes/.test(document.querySelector("#live-lines li:last-child").textContent)`, 10*time.Second)
	act(`[data-client="c2"] [data-act="send"]`)
	var stalled struct{ Sent, Received, State string }
	b.eval(`(() => { const l = document.getElementById("live-view-lane-c2").dataset;
		return { Sent: l.sentBytes, Received: l.recvBytes, State: document.getElementById("live-status").dataset.state }; })()`, &stalled)
	if stalled != (struct{ Sent, Received, State string }{"7", "0", "unnoticed"}) {
		t.Errorf("c2 while c1 does not read: %+v, want 7 bytes sent, none received, the send unnoticed", stalled)
	}
	shots = append(shots, b.screenshot(ScreenshotDir, "live-live.png"))
	act(`[data-client="c1"] [data-act="resume-reading"]`)
	b.waitFor("c2's echo once c1 reads again", `document.getElementById("live-view-lane-c2").dataset.recvBytes === "7"`, 15*time.Second)
	b.waitFor("c1's 200000 bytes echoed", `document.getElementById("live-view-lane-c1").dataset.recvBytes === "200000"`, 15*time.Second)

	// Compare: step02 and step03 on step02's seed.
	b.navigate(hs.URL + "/?mode=compare&a=step02&b=step03&scenario=seed")
	b.waitFor("the comparison", `document.getElementById("compare-pos").dataset.loaded === "true"`, buildWithin)
	var diffs int
	b.eval(`document.querySelectorAll("#compare-rows tr.diff").length`, &diffs)
	if diffs == 0 {
		t.Error("step02 and step03 compared: no line marked as differing")
	}
	shots = append(shots, b.screenshot(ScreenshotDir, "live-compare.png"))
	t.Logf("screenshots: %s", strings.Join(shots, ", "))
	if *tracetest.Update {
		for _, shot := range shots {
			png, _ := os.ReadFile(shot)
			if err := os.WriteFile(filepath.Join(root, "docs", "img", filepath.Base(shot)), png, 0o644); err != nil {
				t.Error(err)
			}
		}
	}
}
