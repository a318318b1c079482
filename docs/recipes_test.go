package docs

// The lessons' hands-on recipes, run as a student would run them. A recipe is the ```sh block after a
// line <!-- recipe NAME --> in a lesson: the test takes its commands from the page itself (so a
// recipe that stops working fails here, not in a classroom), runs them with the step built and on a
// free port, does what the lesson tells the student to do (type a line, press Ctrl-D or Ctrl-Z), and
// checks that the student sees what the lesson says. They need OpenBSD netcat (`nc`, package
// netcat-openbsd); .ci/run installs it.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"muxlab/tracing/tracetest"
)

// within bounds every wait of a recipe: what the lesson promises happens long before it.
const within = 10 * time.Second

var recipeRe = regexp.MustCompile(`^<!-- recipe (\S+) -->$`)

// recipe returns the commands of the recipe NAME in page: the lines of its sh block, comments and
// blank lines left out.
func recipe(t *testing.T, page, name string) []string {
	t.Helper()
	text, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(text), "\n")
	for i, l := range lines {
		if m := recipeRe.FindStringSubmatch(strings.TrimSpace(l)); m == nil || m[1] != name {
			continue
		}
		if i+1 >= len(lines) || strings.TrimSpace(lines[i+1]) != "```sh" {
			t.Fatalf("%s: recipe %s is not followed by a ```sh block", page, name)
		}
		var cmds []string
		for _, l := range lines[i+2:] {
			if strings.TrimSpace(l) == "```" {
				return cmds
			}
			cmd, _, _ := strings.Cut(l, "#")
			if cmd = strings.TrimSpace(cmd); cmd != "" {
				cmds = append(cmds, cmd)
			}
		}
		t.Fatalf("%s: recipe %s's block does not end", page, name)
	}
	t.Fatalf("%s has no <!-- recipe %s -->", page, name)
	return nil
}

// needNC skips the test where OpenBSD netcat is missing, except under CI, which must have it.
func needNC(t *testing.T) {
	t.Helper()
	out, _ := exec.Command("nc", "-h").CombinedOutput()
	if !bytes.Contains(out, []byte("OpenBSD netcat")) {
		if os.Getenv("CI") != "" {
			t.Fatalf("the recipes need OpenBSD netcat (apt-get install netcat-openbsd); nc -h says: %.80q", out)
		}
		t.Skip("the recipes need OpenBSD netcat (apt-get install netcat-openbsd)")
	}
}

// A process is one command of a recipe, in its own process group (Ctrl-Z stops a terminal's whole
// foreground job), with its stdin a pipe the test types into and its output collected: stdout line by
// line, every line kept until the test has looked at it (a chatty server's trace included: a recipe
// lasts seconds), and stderr whole.
type process struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	mu     sync.Mutex
	errOut bytes.Buffer  // stderr
	lines  []string      // stdout lines the test has not looked at yet
	seen   []string      // the last lines it looked at, for a failure's message
	ended  bool          // stdout is closed
	more   chan struct{} // a line came, or stdout closed
	done   chan struct{} // closed once the process has exited
	exit   error         // its exit, once done is closed
}

func (p *process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.errOut.Write(b)
}

// start runs command (a shell command line from a recipe) in its own process group.
func start(t *testing.T, command string) *process {
	t.Helper()
	p := &process{cmd: exec.Command("sh", "-c", command), more: make(chan struct{}, 1), done: make(chan struct{})}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdin = stdin
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			p.wake()
		}
		p.mu.Lock()
		p.ended = true
		p.mu.Unlock()
		p.wake()
		p.exit = p.cmd.Wait() // after the last read from stdout, as exec requires
		close(p.done)
	}()
	t.Cleanup(func() {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	})
	return p
}

func (p *process) wake() {
	select {
	case p.more <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// next returns the next stdout line, waiting until deadline for it; ok is false if stdout ended first
// or the deadline passed (timeout says which).
func (p *process) next(deadline <-chan time.Time) (line string, ok, timeout bool) {
	for {
		p.mu.Lock()
		if len(p.lines) > 0 {
			line, p.lines = p.lines[0], p.lines[1:]
			if p.seen = append(p.seen, line); len(p.seen) > 30 {
				p.seen = p.seen[1:]
			}
			p.mu.Unlock()
			return line, true, false
		}
		ended := p.ended
		p.mu.Unlock()
		if ended {
			return "", false, false
		}
		select {
		case <-p.more:
		case <-deadline:
			return "", false, true
		}
	}
}

// signal sends sig to the process's group, as a terminal does for Ctrl-Z (SIGSTOP stands for it:
// SIGTSTP may be caught) and Ctrl-C.
func (p *process) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil {
		t.Fatal(err)
	}
}

// waitLine waits for an output line matching re, and returns it.
func (p *process) waitLine(t *testing.T, re string) string {
	t.Helper()
	want := regexp.MustCompile(re)
	deadline := time.After(within)
	for {
		l, ok, timeout := p.next(deadline)
		switch {
		case timeout:
			t.Fatalf("%q printed no line matching %q within %v (stderr: %q); its last lines:\n%s", p.cmd.Args[2], re, within, p.stderr(), p.tail())
		case !ok:
			t.Fatalf("%q ended before printing a line matching %q (stderr: %q)", p.cmd.Args[2], re, p.stderr())
		case want.MatchString(l):
			return l
		}
	}
}

// nothingFor checks that the process prints no line for d: the lesson's "nothing comes back".
func (p *process) nothingFor(t *testing.T, d time.Duration) {
	t.Helper()
	if l, ok, _ := p.next(time.After(d)); ok {
		t.Fatalf("%q printed %q, where the lesson says nothing comes back", p.cmd.Args[2], l)
	}
}

// stopsOn waits until the process prints a line matching re and then nothing for quiet: the lesson's
// "the trace stops on ...". It returns that last line.
func (p *process) stopsOn(t *testing.T, re string, quiet time.Duration) string {
	t.Helper()
	want := regexp.MustCompile(re)
	deadline := time.Now().Add(within)
	l := p.waitLine(t, re)
	for time.Now().Before(deadline) {
		next, ok, _ := p.next(time.After(quiet))
		if !ok {
			return l // quiet (or ended: the caller's next wait says so)
		}
		if want.MatchString(next) {
			l = next
		}
	}
	t.Fatalf("%q did not stop on a line matching %q within %v; its last lines:\n%s", p.cmd.Args[2], re, within, p.tail())
	return ""
}

// waitExit waits for the process to exit, and returns its exit status.
func (p *process) waitExit(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("%q did not exit within %v (stderr: %q)", p.cmd.Args[2], within, p.stderr())
	}
	return p.cmd.ProcessState.ExitCode()
}

// tail returns the last lines the test looked at.
func (p *process) tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.seen, "\n")
}

func (p *process) stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.errOut.String()
}

// server starts a recipe's server command, built from the step it names, on a free loopback port,
// and returns it with the port its clients must use instead of the lesson's 8000.
func server(t *testing.T, command string) (*process, string) {
	t.Helper()
	m := regexp.MustCompile(`^go run \./(step\d\d-[a-z-]+)(.*)$`).FindStringSubmatch(command)
	if m == nil {
		t.Fatalf("%q: want a server started with go run ./stepNN-...", command)
	}
	bin := tracetest.Binary(t, "../"+m[1])
	p := start(t, "exec "+bin+m[2]+" -addr 127.0.0.1:0") // exec: a signal for the server reaches it, not a shell
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if m := regexp.MustCompile(`listening on 127\.0\.0\.1:(\d+)`).FindStringSubmatch(p.stderr()); m != nil {
			return p, m[1]
		}
		time.Sleep(10 * time.Millisecond) // polling the server's stderr: it says nothing else when ready
	}
	t.Fatalf("%q did not say where it listens: %q", command, p.stderr())
	return nil, ""
}

// client returns a recipe's client command, aimed at port instead of 8000: nc's 127.0.0.1 8000, or the
// chat client (go run ./step04-chat/client, built, with -addr).
func client(t *testing.T, command, port string) string {
	t.Helper()
	const chat = "go run ./step04-chat/client"
	switch {
	case strings.Contains(command, chat):
		return strings.Replace(command, chat, tracetest.Binary(t, "../step04-chat/client")+" -addr 127.0.0.1:"+port, 1)
	case strings.Contains(command, "127.0.0.1 8000"):
		// -N: send FIN at the end of input, as Ctrl-D means. Lesson 07 pipes half a line into an nc that
		// must not send FIN (a FIN would end the line): it says so, and writes "| nc 127.0.0.1".
		if !strings.Contains(command, "nc -N ") && !strings.Contains(command, "| nc 127.0.0.1 8000") {
			t.Fatalf("%q: every nc in a lesson takes -N (send FIN at the end of input)", command)
		}
		return strings.Replace(command, "127.0.0.1 8000", "127.0.0.1 "+port, 1)
	}
	t.Fatalf("%q: want a client of 127.0.0.1 8000, or %s", command, chat)
	return ""
}

// Lesson 01: the second client waits for the first, and Ctrl-D (nc -N: send FIN at the end of input)
// in the first client's terminal lets the server take the second.
func TestRecipe01_SecondClientWaits(t *testing.T) {
	needNC(t)
	cmds := recipe(t, "01-blocking.md", "second-client-waits")
	if len(cmds) != 3 {
		t.Fatalf("recipe has %d commands, want 3 (the server and two clients): %q", len(cmds), cmds)
	}
	_, port := server(t, cmds[0])
	first := start(t, client(t, cmds[1], port))
	fmt.Fprintln(first.stdin, "123")
	first.waitLine(t, `^123$`)
	second := start(t, client(t, cmds[2], port))
	fmt.Fprintln(second.stdin, "345")
	second.nothingFor(t, 300*time.Millisecond)
	first.stdin.Close() // Ctrl-D in the first client's terminal
	second.waitLine(t, `^345$`)
}

// Lesson 02: an endless sender that is suspended (Ctrl-Z) stops reading its echo; the server, blocked
// in write, answers nobody until it is resumed or killed (B3).
func TestRecipe02_SuspendedSenderStallsEveryone(t *testing.T) {
	needNC(t)
	cmds := recipe(t, "02-select-echo.md", "stall")
	if len(cmds) != 3 {
		t.Fatalf("recipe has %d commands, want 3 (the server, the endless sender, a second client): %q", len(cmds), cmds)
	}
	srv, port := server(t, cmds[0])
	sender := start(t, client(t, cmds[1], port))
	// Let the sender get well ahead of the echo before the suspend, as a second of waiting does: the
	// server must have more to echo than the sockets' buffers hold once the sender stops reading.
	for read := 0; read < 256<<10; {
		n, _ := strconv.Atoi(regexp.MustCompile(`(\d+) bytes`).FindStringSubmatch(srv.waitLine(t, `^read +c1 \d+ bytes`))[1])
		read += n
	}
	sender.signal(t, syscall.SIGSTOP) // Ctrl-Z
	second := start(t, client(t, cmds[2], port))
	second.nothingFor(t, 500*time.Millisecond)
	sender.signal(t, syscall.SIGKILL) // the lesson's "then kill it (kill %1)"
	second.waitLine(t, `^hello$`)
}

// Lesson 03: the same suspended sender no longer stalls anyone. While it runs the server pauses and
// resumes it; suspended, it is left paused with its queue in the write list, and a second client's
// whole life goes by with c1 waiting there; Ctrl-C then stops the server through the self-pipe.
func TestRecipe03_SuspendedSenderStallsNobody(t *testing.T) {
	needNC(t)
	cmds := recipe(t, "03-write-queues.md", "stall")
	if len(cmds) != 3 {
		t.Fatalf("recipe has %d commands, want 3 (the server, the endless sender, a second client): %q", len(cmds), cmds)
	}
	srv, port := server(t, cmds[0])
	sender := start(t, client(t, cmds[1], port))
	srv.waitLine(t, `^pause +c1 reading: \d+ pending >= high-water 65536$`) // "the trace scrolls with pause and resume"
	srv.waitLine(t, `^resume +c1 reading: \d+ pending < low-water 16384$`)
	sender.signal(t, syscall.SIGSTOP) // Ctrl-Z
	// "The trace stops on pause c1 ... and a select with write=[c1] and no c1 under read=": the server
	// takes what is left in the kernel for c1 until the mark, and sleeps.
	pausedSelect := `^select +read=\[listener signals\] write=\[c1\]`
	srv.stopsOn(t, pausedSelect, 500*time.Millisecond)
	second := start(t, client(t, cmds[2], port))
	second.waitLine(t, `^hello$`) // "Terminal 3's hello comes back at once"
	// The trace: c2's whole life, while c1 stays in the write list and out of the read list (paused).
	srv.waitLine(t, `^accept +c2$`)
	for {
		l := srv.waitLine(t, ``)
		if regexp.MustCompile(`^close +c2 \(EOF\)$`).MatchString(l) {
			break
		}
		if m := regexp.MustCompile(`^select +read=\[([^]]*)\] write=\[([^]]*)\]`).FindStringSubmatch(l); m != nil &&
			(slices.Contains(strings.Fields(m[1]), "c1") || !slices.Contains(strings.Fields(m[2]), "c1")) {
			t.Fatalf("during c2's life the server asked %q: want c1 in the write list only (paused, its echo waiting); the trace:\n%s", l, srv.tail())
		}
	}
	srv.stopsOn(t, pausedSelect, 300*time.Millisecond) // and back to sleep, c1 still waiting
	// fg and Ctrl-C end the sender; Ctrl-C in terminal 1 stops the server, which exits 0.
	sender.signal(t, syscall.SIGCONT)
	sender.signal(t, syscall.SIGINT)
	sender.waitExit(t)
	srv.signal(t, syscall.SIGINT)
	srv.waitLine(t, `^signal +SIGINT: stop accepting`)
	if status := srv.waitExit(t); status != 0 {
		t.Fatalf("the server stopped by Ctrl-C exited with status %d, want 0 (stderr: %q)", status, srv.stderr())
	}
}

// Lesson 04: the room with two of the lab's clients, nc and a script. Clients' stdin is a pipe (the
// chat client's plain mode); what they print is what the lesson promises.
func TestRecipe04_Chat(t *testing.T) {
	needNC(t)
	cmds := recipe(t, "04-chat.md", "chat")
	if len(cmds) != 5 {
		t.Fatalf("recipe has %d commands, want 5 (the room, two clients, nc, a script): %q", len(cmds), cmds)
	}
	_, port := server(t, cmds[0])
	alice := start(t, client(t, cmds[1], port))
	alice.waitLine(t, `^\* welcome, guest1;`)
	fmt.Fprintln(alice.stdin, "/nick alice") // "try /nick, /who, /msg"
	alice.waitLine(t, `^\* you are now alice$`)
	guest2 := start(t, client(t, cmds[2], port))
	guest2.waitLine(t, `^\* welcome, guest2;`)
	alice.waitLine(t, `^\* guest2 joined$`)
	nc := start(t, client(t, cmds[3], port)) // "any line-based client will do"
	nc.waitLine(t, `^\* welcome, guest3;`)
	alice.waitLine(t, `^\* guest3 joined$`)
	fmt.Fprintln(guest2.stdin, "/msg alice psst")
	alice.waitLine(t, `^guest2 \(private\): psst$`)
	fmt.Fprintln(guest2.stdin, "/who")
	guest2.waitLine(t, `^\* in the room: alice, guest2, guest3$`)
	fmt.Fprintln(nc.stdin, "hi from nc")
	alice.waitLine(t, `^guest3: hi from nc$`)
	guest2.waitLine(t, `^guest3: hi from nc$`)

	// The script: three lines, then EOF. It reads the room's answers, leaves, and exits 0.
	script := start(t, client(t, cmds[4], port))
	script.waitLine(t, `^\* you are now dave$`)
	script.waitLine(t, `^\* in the room: alice, guest2, guest3, dave$`)
	if status := script.waitExit(t); status != 0 {
		t.Fatalf("the script client exited with status %d, want 0 (stderr: %q)", status, script.stderr())
	}
	for _, member := range []*process{alice, guest2, nc} {
		member.waitLine(t, `^dave: hello$`)
		member.waitLine(t, `^\* dave left$`)
	}

	// Ctrl-D in nc's terminal: the room hears guest3 leave, and nc exits once the server closes.
	nc.stdin.Close()
	alice.waitLine(t, `^\* guest3 left$`)
	guest2.waitLine(t, `^\* guest3 left$`)
	nc.waitExit(t)
}

// Lesson 04: a member who never reads, suspended, is put out by a flood, and the flooder is told.
func TestRecipe04_SlowMemberIsPutOut(t *testing.T) {
	needNC(t)
	cmds := recipe(t, "04-chat.md", "put-out")
	if len(cmds) != 3 {
		t.Fatalf("recipe has %d commands, want 3 (the room, a silent member, a flood): %q", len(cmds), cmds)
	}
	srv, port := server(t, cmds[0])
	silent := start(t, client(t, cmds[1], port))
	srv.waitLine(t, `^join +c1 as guest1$`)
	silent.signal(t, syscall.SIGSTOP) // Ctrl-Z
	flood := start(t, client(t, cmds[2], port))
	flood.waitLine(t, `^\* guest1 was put out: too slow to read$`)
	srv.waitLine(t, `^too-slow +c1 `)
	if status := flood.waitExit(t); status != 0 {
		t.Fatalf("the flooding client exited with status %d, want 0 (stderr: %q)", status, flood.stderr())
	}
}

// Lesson 05: with -fds, each member's accept and epoll_ctl ADD name its fd; a member who leaves is
// closed, and the next one gets its number back (the lowest free fd).
func TestRecipe05_FDNumbersAreReused(t *testing.T) {
	cmds := recipe(t, "05-epoll.md", "watch")
	if len(cmds) != 4 {
		t.Fatalf("recipe has %d commands, want 4 (the server, three members): %q", len(cmds), cmds)
	}
	srv, port := server(t, cmds[0])
	first := start(t, client(t, cmds[1], port))
	fd1 := regexp.MustCompile(`^accept +c1\(fd(\d+)\)$`).FindStringSubmatch(srv.waitLine(t, `^accept +c1\(fd\d+\)$`))[1]
	srv.waitLine(t, `^epoll_ctl +ADD c1\(fd`+fd1+`\) IN\|RDHUP$`)
	first.waitLine(t, `^\* welcome, guest1;`)
	second := start(t, client(t, cmds[2], port))
	srv.waitLine(t, `^accept +c2\(fd\d+\)$`)
	first.waitLine(t, `^\* guest2 joined$`)
	first.stdin.Close() // Ctrl-D in terminal 2
	srv.waitLine(t, `^close +c1\(fd`+fd1+`\) \(EOF\)$`)
	second.waitLine(t, `^\* guest1 left$`)
	if status := first.waitExit(t); status != 0 {
		t.Fatalf("the member who pressed Ctrl-D exited with status %d, want 0 (stderr: %q)", status, first.stderr())
	}
	start(t, client(t, cmds[3], port))
	srv.waitLine(t, `^accept +c3\(fd`+fd1+`\)$`) // c1's number, given out again
	second.waitLine(t, `^\* guest3 joined$`)
}

// Lesson 07: a client that sends half a line is told and closed when its line deadline passes; a
// member who says nothing is told of it, and is closed when its idle deadline passes. Typing a line
// before then would have moved its deadline (the lesson's question; not played here).
func TestRecipe07_Deadlines(t *testing.T) {
	needNC(t)
	cmds := recipe(t, "07-timers.md", "deadlines")
	if len(cmds) != 3 {
		t.Fatalf("recipe has %d commands, want 3 (the server, the half line, the silent member): %q", len(cmds), cmds)
	}
	srv, port := server(t, cmds[0])
	half := start(t, client(t, cmds[1], port))
	srv.waitLine(t, `^read +c1 3 bytes "hel"$`)
	silent := start(t, client(t, cmds[2], port))
	srv.waitLine(t, `^accept +c2$`)
	silent.waitLine(t, `^\* welcome, guest2;`)
	half.waitLine(t, `^\* line too slow$`)
	srv.waitLine(t, `^timeout +c1 line$`)
	if status := half.waitExit(t); status != 0 {
		t.Fatalf("the half line's nc exited with status %d, want 0 once the server closed (stderr: %q)", status, half.stderr())
	}
	silent.waitLine(t, `^\* guest1 was put out: line too slow$`)
	silent.waitLine(t, `^\* idle too long$`)
	srv.waitLine(t, `^timeout +c2 idle$`)
	srv.waitLine(t, `^close +c2 \(`)
	silent.stdin.Close() // Ctrl-D: nc, still reading its input, notices the closed connection only then
	if status := silent.waitExit(t); status != 0 {
		t.Fatalf("the silent member's nc exited with status %d, want 0 once the server closed (stderr: %q)", status, silent.stderr())
	}
}

// Lesson 09: two members dealt to two loops; a line said on L0 reaches the member on L1 through L1's
// inbox, the trace says so with each line's loop, /who lists both, and a member who leaves on L0 is
// told on L1.
func TestRecipe09_TwoLoops(t *testing.T) {
	needNC(t)
	cmds := recipe(t, "09-multicore.md", "loops")
	if len(cmds) != 3 {
		t.Fatalf("recipe has %d commands, want 3 (the server, two members): %q", len(cmds), cmds)
	}
	srv, port := server(t, cmds[0])
	first := start(t, client(t, cmds[1], port))
	first.waitLine(t, `^\* welcome, guest1;`)
	second := start(t, client(t, cmds[2], port))
	second.waitLine(t, `^\* welcome, guest2;`)
	first.waitLine(t, `^\* guest2 joined$`)
	fmt.Fprintln(first.stdin, "hello, other loop")
	second.waitLine(t, `^guest1: hello, other loop$`)
	srv.waitLine(t, `^L0 read +c1 18 bytes "hello, other loop\\n"$`)
	srv.waitLine(t, `^L0 post +L1 1 message\(s\)$`)
	srv.waitLine(t, `^L1 ready +inbox=IN$`)
	srv.waitLine(t, `^L1 deliver +from L0 "guest1: hello, other loop"$`)
	fmt.Fprintln(second.stdin, "/who")
	second.waitLine(t, `^\* in the room: guest1, guest2$`)
	first.stdin.Close() // Ctrl-D
	srv.waitLine(t, `^L0 leave +c1 guest1 left$`)
	srv.waitLine(t, `^L1 deliver +from L0 "\* guest1 left"$`)
	second.waitLine(t, `^\* guest1 left$`)
	first.waitExit(t)
}
