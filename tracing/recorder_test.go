package tracing_test

import (
	"errors"
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
	if !strings.Contains(d, `-`) || !strings.Contains(d, `"b"`) || !strings.Contains(d, `"B"`) {
		t.Fatalf("diff does not show the changed line:\n%s", d)
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
