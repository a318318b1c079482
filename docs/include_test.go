package docs

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"muxlab/tracing"
	"muxlab/tracing/tracetest"
)

// update is the -update flag every test package of the lab shares: here it rewrites the included blocks
// in docs/*.md.
var update = tracetest.Update

var includeRe = regexp.MustCompile(`^<!-- include (\S+)(?: (func|type|lines) (\S+)| (mermaid))? -->$`)

// TestDocsIncludesUpToDate checks that every included block in docs/*.md and README.md matches its
// source, so that no trace or code excerpt in a lesson can go stale.
func TestDocsIncludesUpToDate(t *testing.T) {
	pages, _ := filepath.Glob("*.md")
	pages = append(pages, "../README.md")
	for _, page := range pages {
		old, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := expand(page, string(old))
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if fresh == string(old) {
			continue
		}
		if *update {
			if err := os.WriteFile(page, []byte(fresh), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("%s is stale (go test ./docs -update regenerates it):\n%s", page, tracing.Diff(string(old), fresh))
	}
}

// expand rewrites every include block of a page from its source.
func expand(page, text string) (string, error) {
	lines := strings.Split(text, "\n")
	var out []string
	for i := 0; i < len(lines); i++ {
		out = append(out, lines[i])
		m := includeRe.FindStringSubmatch(strings.TrimSpace(lines[i]))
		if m == nil {
			continue
		}
		end := i + 1
		for end < len(lines) && strings.TrimSpace(lines[end]) != "<!-- end -->" {
			end++
		}
		if end == len(lines) {
			return "", fmt.Errorf("%s:%d: include without <!-- end -->", page, i+1)
		}
		kind, name := m[2], m[3]
		if m[4] != "" {
			kind = m[4]
		}
		body, lang, err := source(m[1], kind, name)
		if err != nil {
			return "", fmt.Errorf("%s:%d: %v", page, i+1, err)
		}
		out = append(out, "```"+lang)
		out = append(out, strings.Split(strings.TrimSuffix(body, "\n"), "\n")...)
		out = append(out, "```", "<!-- end -->")
		i = end
	}
	return strings.Join(out, "\n"), nil
}

// source returns the text an include names, and the code fence's language.
func source(path, kind, name string) (string, string, error) {
	data, err := os.ReadFile(filepath.Join("..", path))
	if err != nil {
		return "", "", err
	}
	lang := "text"
	if strings.HasSuffix(path, ".go") {
		lang = "go"
	}
	if strings.HasSuffix(path, ".mmd") {
		lang = "mermaid" // a diagram a test drew (step08's sequence diagrams, step09's loops)
	}
	switch kind {
	case "":
		return string(data), lang, nil
	case "mermaid":
		return tracing.Mermaid(string(data)), "mermaid", nil
	case "lines":
		a, b, ok := strings.Cut(name, "-")
		from, err1 := strconv.Atoi(a)
		to, err2 := strconv.Atoi(b)
		all := strings.Split(string(data), "\n")
		if !ok || err1 != nil || err2 != nil || from < 1 || to < from || to > len(all) {
			return "", "", fmt.Errorf("lines %q: want FROM-TO within %s", name, path)
		}
		return strings.Join(all[from-1:to], "\n"), lang, nil
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, data, parser.ParseComments)
	if err != nil {
		return "", "", err
	}
	for _, d := range f.Decls {
		var start, end token.Pos
		switch d := d.(type) {
		case *ast.FuncDecl:
			if kind == "func" && d.Name.Name == name {
				start, end = d.Pos(), d.End()
				if d.Doc != nil {
					start = d.Doc.Pos()
				}
			}
		case *ast.GenDecl:
			for _, s := range d.Specs {
				if ts, ok := s.(*ast.TypeSpec); ok && kind == "type" && ts.Name.Name == name {
					start, end = d.Pos(), d.End()
					if d.Doc != nil {
						start = d.Doc.Pos()
					}
				}
			}
		}
		if start.IsValid() {
			return string(bytes.TrimSpace(data[fset.Position(start).Offset:fset.Position(end).Offset])), lang, nil
		}
	}
	return "", "", fmt.Errorf("%s has no %s %s", path, kind, name)
}
