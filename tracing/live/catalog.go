package live

// Which steps there are, and which scenarios each can play: a step's own scenarios/*.txt, and from
// step05 on the echo scenarios of step03 and the room scenarios of step04 as well, the ones its golden
// transcripts come from (echo-NAME, room-NAME).

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// A Step is one of the lab's step programs.
type Step struct {
	Name      string     `json:"name"` // step03
	Dir       string     `json:"dir"`  // step03-write-queues, relative to the module's root
	Scenarios []Scenario `json:"scenarios"`
}

// A Scenario is a scenario file a step can play.
type Scenario struct {
	Name    string `json:"name"`    // slow-reader, echo-slow-reader, room-framing
	File    string `json:"file"`    // relative to the module's root
	Service string `json:"service"` // echo or room: what the clients expect of the server
}

var stepDir = regexp.MustCompile(`^step(\d\d)-[a-z0-9-]+$`)

// Steps lists the step programs under root with their scenarios.
func Steps(root string) ([]Step, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	var steps []Step
	own := map[string][]Scenario{} // by step number, for the later steps to borrow from
	for _, e := range entries {
		m := stepDir.FindStringSubmatch(e.Name())
		if !e.IsDir() || m == nil {
			continue
		}
		st := Step{Name: "step" + m[1], Dir: e.Name()}
		files, _ := filepath.Glob(filepath.Join(root, e.Name(), "scenarios", "*.txt"))
		for _, f := range files {
			name := strings.TrimSuffix(filepath.Base(f), ".txt")
			rel, _ := filepath.Rel(root, f)
			st.Scenarios = append(st.Scenarios, Scenario{Name: name, File: rel, Service: service(st.Name, name)})
		}
		own[m[1]] = st.Scenarios
		steps = append(steps, st)
	}
	for i, st := range steps {
		if !servesBoth(st.Name) {
			continue
		}
		for _, borrowed := range []struct{ from, prefix string }{{"03", "echo-"}, {"04", "room-"}} {
			for _, sc := range own[borrowed.from] {
				sc.Name = borrowed.prefix + sc.Name
				if _, dup := scenarioOf(steps[i], sc.Name); dup || sc.Name == "room-room" && hasRoom(steps[i]) {
					continue // the step has its own copy of it
				}
				if slices.Contains(cannotPlay[st.Name], sc.Name) {
					continue
				}
				steps[i].Scenarios = append(steps[i].Scenarios, sc)
			}
		}
	}
	return steps, nil
}

// cannotPlay lists the borrowed scenarios a step's own tests do not play either. Step10's echo is a
// goroutine parked in Write while its client does not read, so it does not react to a second burst,
// and the replayer, which waits for a reaction, cannot play step03's scenarios that send one; and its
// room puts a slow member out by a smaller queue than step04's slow scenario assumes (see
// step10-goroutines/main_test.go).
var cannotPlay = map[string][]string{
	"step10": {"echo-half-close", "echo-queued-chunks", "echo-reset", "echo-slow-reader", "room-slow"},
}

func hasRoom(st Step) bool {
	_, ok := scenarioOf(st, "room")
	return ok
}

// number is a step's number: 3 for step03.
func number(step string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(step, "step"))
	return n
}

// servesBoth reports whether the step serves step03's echo (with -echo) as well as step04's room: the
// steps from step05 on.
func servesBoth(step string) bool { return number(step) >= 5 }

// service says what a scenario of step expects: step01 to step03 echo, step04 is the room; from
// step05 on, a scenario named echo-... is for the echo.
func service(step, scenario string) string {
	n := number(step)
	if n <= 3 || n >= 5 && strings.HasPrefix(scenario, "echo-") {
		return "echo"
	}
	return "room"
}

// ServerArgs are the flags step needs, beyond the scenario's own args line, to serve sc: -echo for an
// echo scenario on a step that serves the room by default, and for step09 two loops (its default is
// one per CPU, which would make a transcript depend on the machine).
func ServerArgs(step string, sc Scenario, scenarioArgs []string) []string {
	var args []string
	if servesBoth(step) && sc.Service == "echo" {
		args = append(args, "-echo")
	}
	if step == "step09" && !slices.ContainsFunc(scenarioArgs, func(a string) bool { return strings.TrimLeft(a, "-") == "loops" }) {
		args = append(args, "-loops", "2")
	}
	return args
}

// find returns the step called name (step03 or step03-write-queues).
func find(steps []Step, name string) (Step, bool) {
	for _, st := range steps {
		if st.Name == name || st.Dir == name {
			return st, true
		}
	}
	return Step{}, false
}

// scenarioOf returns the scenario of st called name.
func scenarioOf(st Step, name string) (Scenario, bool) {
	for _, sc := range st.Scenarios {
		if sc.Name == name {
			return sc, true
		}
	}
	return Scenario{}, false
}
