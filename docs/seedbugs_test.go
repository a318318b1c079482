package docs

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestEverySeedBugHasATest reads the museum's table: every defect B1..B19 must be there, and every test
// it names must exist in the package it names.
func TestEverySeedBugHasATest(t *testing.T) {
	page, err := os.ReadFile("seed-bugs.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile(`^\| (B\d+) \|`)
	guard := regexp.MustCompile("`(step[0-9a-z/-]+)` `(Test\\w+)`")
	seen := map[string]bool{}
	for _, line := range strings.Split(string(page), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		bug := m[1]
		seen[bug] = true
		guards := guard.FindAllStringSubmatch(line, -1)
		if len(guards) == 0 {
			t.Errorf("%s names no test", bug)
		}
		for _, g := range guards {
			if !strings.Contains(g[2], bug+"_") {
				t.Errorf("%s is guarded by %s, whose name does not say %s", bug, g[2], bug)
			}
			if !hasTest(t, filepath.Join("..", g[1]), g[2]) {
				t.Errorf("%s: no func %s in %s/*_test.go", bug, g[2], g[1])
			}
		}
	}
	for i := 1; i <= 19; i++ {
		if b := fmt.Sprintf("B%d", i); !seen[b] {
			t.Errorf("%s is missing from seed-bugs.md", b)
		}
	}
}

func hasTest(t *testing.T, dir, name string) bool {
	files, _ := filepath.Glob(filepath.Join(dir, "*_test.go"))
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(src), "\nfunc "+name+"(") {
			return true
		}
	}
	return false
}
