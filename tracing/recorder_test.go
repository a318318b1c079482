package tracing_test

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"muxlab/tracing"
	_ "muxlab/tracing/tracetest" // for -update, which go test ./... -update passes to every package
)

func TestRecorderNamesByRoleAndOrder(t *testing.T) {
	var b strings.Builder
	tr := tracing.New(&b, false)
	tr.Listen(3)
	tr.Select([]int{3}, nil, nil)
	tr.Accept(7)
	tr.Accept(5)
	tr.Selected([]int{7, 5}, []int{5}, nil)
	tr.Read(7, []byte("123\n"))
	tr.Write(5, 2, 4)
	tr.Again(5, "write")
	tr.Close(7, "EOF")
	tr.Accept(7) // the kernel reuses fd 7: the new client gets a new name
	tr.Error(7, "read", errors.New("boom"))
	tr.Queue(5, 4, 6)
	tr.Unqueue(5, 2, 4)
	tr.Event("pause", 5, "reading: %d pending >= high-water %d", 4, 4)
	want := `listen     listener
select     read=[listener] write=[] except=[]
accept     c1
accept     c2
ready      read=[c1 c2] write=[c2] except=[]
read       c1 4 bytes "123\n"
write      c2 2 of 4 bytes
write      c2 EAGAIN
close      c1 (EOF)
accept     c3
read       c3 error boom
queue      c2 +4 bytes, 6 pending
unqueue    c2 -2 bytes, 4 pending
pause      c2 reading: 4 pending >= high-water 4
`
	if d := tracing.Diff(want, b.String()); d != "" {
		t.Fatalf("trace (-want +got):\n%s", d)
	}
}

func TestRecorderShowsFDsOnlyWhenAsked(t *testing.T) {
	var b strings.Builder
	tr := tracing.New(&b, true)
	tr.Listen(3)
	tr.Accept(9)
	if got, want := b.String(), "listen     listener(fd3)\naccept     c1(fd9)\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// A nil Recorder is tracing off: every method must be callable and do nothing.
// Flush writes the queue lines held so far, summed, and nothing when none is held; queue lines after it
// start a new sum.
func TestFlushWritesHeldQueueLines(t *testing.T) {
	var b strings.Builder
	tr := tracing.New(&b, false)
	tr.Accept(4)
	tr.Accept(5)
	tr.Queue(4, 3, 3)
	tr.Queue(5, 2, 2)
	tr.Queue(4, 1, 4)
	if strings.Contains(b.String(), "queue") {
		t.Fatalf("queue lines written before Flush:\n%s", b.String())
	}
	tr.Flush()
	tr.Flush()
	tr.Queue(4, 6, 10)
	tr.Flush()
	want := `accept     c1
accept     c2
queue      c1 +4 bytes, 4 pending
queue      c2 +2 bytes, 2 pending
queue      c1 +6 bytes, 10 pending
`
	if d := tracing.Diff(want, b.String()); d != "" {
		t.Fatalf("trace (-want +got):\n%s", d)
	}
}

func TestNilRecorderRecordsNothing(t *testing.T) {
	var tr *tracing.Recorder
	if tr.On() {
		t.Fatal("a nil recorder says it is on")
	}
	tr.Listen(3)
	tr.Accept(4)
	tr.Select([]int{3, 4}, nil, nil)
	tr.Selected([]int{4}, nil, nil)
	tr.Block("read", 4)
	tr.Read(4, []byte("x"))
	tr.ReadEOF(4)
	tr.Write(4, 1, 1)
	tr.Again(4, "read")
	tr.Error(4, "read", errors.New("x"))
	tr.Queue(4, 1, 1)
	tr.Unqueue(4, 1, 0)
	tr.Event("pause", 4, "%d", 1)
	tr.Note("shutdown", "now")
	tr.Flush()
	tr.Close(4, "EOF")
	if tr.Name(4, "x") != "" || tr.NameClient(4) != "" {
		t.Fatal("a nil recorder named something")
	}
}

func TestQuoteCutsLongPayloads(t *testing.T) {
	if got := tracing.Quote([]byte("hi\x1b[2J")); got != `"hi\x1b[2J"` {
		t.Fatalf("control bytes must be escaped, got %s", got)
	}
	long := strings.Repeat("a", tracing.PayloadLimit+10)
	want := `"` + long[:tracing.PayloadLimit] + `"...(+10)`
	if got := tracing.Quote([]byte(long)); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestDiffIsEmptyOnlyForEqualTraces(t *testing.T) {
	if d := tracing.Diff("a\nb\n", "a\nb\n"); d != "" {
		t.Fatalf("equal traces differ: %s", d)
	}
	d := tracing.Diff("a\nb\nc\n", "a\nB\nc\n")
	if !strings.Contains(d, "\n-b\n+B\n") {
		t.Fatalf("diff does not show the changed line:\n%s", d)
	}
}

// A diff shows whole lines, like diff -u: one changed line in a long trace is a hunk of that line
// removed and added, with 3 lines of context around it, and nothing of go-cmp's layout.
func TestDiffShowsWholeLinesWithContext(t *testing.T) {
	var want, got strings.Builder
	for i := 1; i <= 100; i++ {
		line := fmt.Sprintf("write      c%d 80 of 80 bytes\n", i)
		want.WriteString(line)
		if i == 50 {
			line = "write      c50 79 of 80 bytes\n"
		}
		got.WriteString(line)
	}
	d := tracing.Diff(want.String(), got.String())
	wantDiff := `--- want
+++ got
@@ -47,7 +47,7 @@
 write      c47 80 of 80 bytes
 write      c48 80 of 80 bytes
 write      c49 80 of 80 bytes
-write      c50 80 of 80 bytes
+write      c50 79 of 80 bytes
 write      c51 80 of 80 bytes
 write      c52 80 of 80 bytes
 write      c53 80 of 80 bytes
`
	if d != wantDiff {
		t.Fatalf("diff of one changed line:\n%s\nwant:\n%s", d, wantDiff)
	}
	for _, goCmp := range []string{"strings.Join", "identical", "[]string{", "\t"} {
		if strings.Contains(d, goCmp) {
			t.Errorf("diff has go-cmp's %q:\n%s", goCmp, d)
		}
	}
}

// Texts too long and too different for a shortest edit script in bounded memory are still diffed in
// whole lines: the changed stretch between their common ends is removed, then added.
func TestDiffOfLongDifferentTextsIsWholeLines(t *testing.T) {
	var want, got strings.Builder
	want.WriteString("same\n")
	got.WriteString("same\n")
	for i := range 2100 { // 2101 x 2101 cells are more than the edit script's table may have
		fmt.Fprintf(&want, "a%d\n", i)
		fmt.Fprintf(&got, "b%d\n", i)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	d := tracing.Diff(want.String(), got.String())
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 { // the table would be 35 MB
		t.Errorf("the diff allocated %d MB", alloc>>20)
	}
	if !strings.HasPrefix(d, "--- want\n+++ got\n@@ -1,2101 +1,2101 @@\n same\n-a0\n-a1\n") ||
		!strings.Contains(d, "\n-a2099\n+b0\n+b1\n") || !strings.HasSuffix(d, "\n+b2099\n") {
		t.Fatalf("diff of 2100 changed lines begins\n%s\nand ends\n%s", d[:min(len(d), 200)], d[max(0, len(d)-200):])
	}
}

// Two changes further apart than twice the context are two hunks; lines only in one text are shown
// with the other's line numbers unchanged.
func TestDiffSplitsDistantChangesIntoHunks(t *testing.T) {
	want := "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n"
	got := "1\n2\nnew\n3\n4\n5\n6\n7\n8\n9\n10\n12\n"
	wantDiff := `--- want
+++ got
@@ -1,5 +1,6 @@
 1
 2
+new
 3
 4
 5
@@ -8,5 +9,4 @@
 8
 9
 10
-11
 12
`
	if d := tracing.Diff(want, got); d != wantDiff {
		t.Fatalf("got:\n%s\nwant:\n%s", d, wantDiff)
	}
}

// Tracing off allocates nothing on a step's hot path, whatever the sizes: Event would, since an int
// past 255 put in its ...any is an allocation; Queue and Unqueue take ints for that reason.
func TestNilRecorderAllocatesNothingPerMessage(t *testing.T) {
	var tr *tracing.Recorder
	p := make([]byte, 4096)
	allocs := testing.AllocsPerRun(100, func() {
		tr.Read(4, p)
		tr.Queue(4, len(p), 3*len(p))
		tr.Write(4, len(p), 3*len(p))
		tr.Unqueue(4, len(p), 2*len(p))
	})
	if allocs != 0 {
		t.Errorf("%v allocations per message with tracing off, want 0", allocs)
	}
}

// Tracing off costs one nil check per call: this is the price a step pays on its hot path.
func BenchmarkRecorderOff(b *testing.B) {
	var tr *tracing.Recorder
	p := []byte("0123456789abcdef")
	watched := []int{3, 4, 5}
	for b.Loop() {
		tr.Select(watched, nil, nil)
		tr.Read(4, p)
		tr.Write(4, len(p), len(p))
	}
}

func BenchmarkRecorderOn(b *testing.B) {
	tr := tracing.New(discard{}, false)
	tr.Listen(3)
	tr.Accept(4)
	tr.Accept(5)
	p := []byte("0123456789abcdef")
	watched := []int{3, 4, 5}
	for b.Loop() {
		tr.Select(watched, nil, nil)
		tr.Read(4, p)
		tr.Write(4, len(p), len(p))
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// FuzzDiff: Diff must never panic, and must be empty exactly when the line lists are equal.
func FuzzDiff(f *testing.F) {
	f.Add("a\nb\n", "a\nb\n")
	f.Add("listen     listener\n", "")
	f.Add("x", "x\n")
	f.Fuzz(func(t *testing.T, a, b string) {
		d := tracing.Diff(a, b)
		equal := strings.Join(tracing.Lines(a), "\n") == strings.Join(tracing.Lines(b), "\n") &&
			len(tracing.Lines(a)) == len(tracing.Lines(b))
		if (d == "") != equal {
			t.Fatalf("Diff(%q, %q) = %q, but equal=%v", a, b, d, equal)
		}
	})
}

func TestMermaidDrawsClientsAndServer(t *testing.T) {
	got := tracing.Mermaid(`listen     listener
select     read=[listener] write=[] except=[]
>> c1 send "a;b#\n"
write      c1 4 of 4 bytes
<< c1 nothing for 300ms
close      c1 (EOF)
`)
	want := `sequenceDiagram
    participant c1
    participant server
    Note over server: select read=[listener] write=[] except=[]
    c1->>server: send a,bno.⏎
    server-->>c1: 4 of 4 bytes
    Note over c1: nothing for 300ms
    server--xc1: close (EOF)
`
	if d := tracing.Diff(want, got); d != "" {
		t.Fatalf("mermaid (-want +got):\n%s", d)
	}
}

// Several loops, one trace: every line starts with its loop, clients are named across the loops in
// order of acceptance, and a client passed from one loop to another keeps its name.
func TestLoopsPrefixLinesAndShareClientNames(t *testing.T) {
	var b strings.Builder
	trs := tracing.Loops(&b, false, 2)
	trs[0].Listen(3)
	trs[0].Accept(7)
	trs[1].Accept(7) // the same number in another loop: its own client (with -reuseport)
	name := trs[0].Pass(7, "L1")
	trs[0].Accept(7) // L0's fd 7 was passed on: the number is free for the next client
	trs[1].Adopt(9, name, "L0")
	trs[1].Read(9, []byte("hi\n"))
	want := `L0 listen     listener
L0 accept     c1
L1 accept     c2
L0 pass       c1 to L1
L0 accept     c3
L1 adopt      c1 from L0
L1 read       c1 3 bytes "hi\n"
`
	if d := tracing.Diff(want, b.String()); d != "" {
		t.Fatalf("trace (-want +got):\n%s", d)
	}
}

// ByLoop gives two interleavings of the same loops' lines one order, and leaves the clients' lines,
// and a transcript of one loop, where they were.
func TestByLoopOrdersEachStretchByLoop(t *testing.T) {
	a := ">> c1 send \"hi\\n\"\nL1 ready      inbox=IN\nL0 read       c1 3 bytes \"hi\\n\"\nL1 deliver    from L0 \"hi\"\nL0 post       L1 1 message(s)\n<< c2 \"hi\\n\"\nL0 epoll_wait interest=4\n"
	b := ">> c1 send \"hi\\n\"\nL0 read       c1 3 bytes \"hi\\n\"\nL0 post       L1 1 message(s)\nL1 ready      inbox=IN\nL1 deliver    from L0 \"hi\"\n<< c2 \"hi\\n\"\nL0 epoll_wait interest=4\n"
	if tracing.ByLoop(a) != b || tracing.ByLoop(b) != b {
		t.Fatalf("ByLoop(a) =\n%s\nByLoop(b) =\n%s\nwant both\n%s", tracing.ByLoop(a), tracing.ByLoop(b), b)
	}
	one := ">> c1 send \"hi\\n\"\nready      c1=IN\nread       c1 3 bytes \"hi\\n\"\n<< c1 \"hi\\n\"\n"
	if got := tracing.ByLoop(one); got != one {
		t.Fatalf("one loop's transcript changed:\n%s", got)
	}
}
