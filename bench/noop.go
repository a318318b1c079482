//go:build linux

package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"os"
	"path/filepath"
	"strings"
)

// noTracingOverlay writes, into dir, the files of a go build -overlay that compiles the tracing
// package with its Recorder emptied, and returns the overlay's replacements: every method on Recorder, and every function that returns one (New), keeps its
// signature and loses its body, so the compiler inlines each trace call to nothing. A step built with
// it is that step with tracing compiled out, and its own source is untouched: the bench compares it
// with the real build run with -trace=false, to show what "off" costs.
func noTracingOverlay(root, dir string) (map[string]string, error) {
	files, err := filepath.Glob(filepath.Join(root, "tracing", "*.go"))
	if err != nil {
		return nil, err
	}
	replace := map[string]string{}
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
		if err != nil {
			return nil, err
		}
		changed := false
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil || !(onRecorder(fn) || returnsRecorder(fn)) {
				continue
			}
			// Name the results, so that a bare return gives their zero values (nil for a *Recorder).
			if res := fn.Type.Results; res != nil {
				for i, field := range res.List {
					if len(field.Names) == 0 {
						field.Names = []*ast.Ident{ast.NewIdent(fmt.Sprintf("noop%d", i))}
					}
				}
			}
			fn.Body = &ast.BlockStmt{List: []ast.Stmt{&ast.ReturnStmt{}}}
			changed = true
		}
		if !changed {
			continue
		}
		dropUnusedImports(f)
		out := filepath.Join(dir, "noop-"+filepath.Base(path))
		w, err := os.Create(out)
		if err != nil {
			return nil, err
		}
		err = printer.Fprint(w, fset, f)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, err
		}
		replace[path] = out
	}
	if len(replace) == 0 {
		return nil, fmt.Errorf("no Recorder methods found under %s", filepath.Join(root, "tracing"))
	}
	return replace, nil
}

// isRecorder reports whether e is Recorder or *Recorder.
func isRecorder(e ast.Expr) bool {
	if star, ok := e.(*ast.StarExpr); ok {
		e = star.X
	}
	id, ok := e.(*ast.Ident)
	return ok && id.Name == "Recorder"
}

func onRecorder(fn *ast.FuncDecl) bool {
	return fn.Recv != nil && len(fn.Recv.List) == 1 && isRecorder(fn.Recv.List[0].Type)
}

func returnsRecorder(fn *ast.FuncDecl) bool {
	if fn.Recv != nil || fn.Type.Results == nil {
		return false
	}
	for _, r := range fn.Type.Results.List {
		if isRecorder(r.Type) {
			return true
		}
	}
	return false
}

// dropUnusedImports removes the imports that only the emptied bodies used, which the compiler would
// otherwise reject.
func dropUnusedImports(f *ast.File) {
	used := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			if id, ok := sel.X.(*ast.Ident); ok {
				used[id.Name] = true
			}
		}
		return true
	})
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.IMPORT {
			continue
		}
		kept := gd.Specs[:0]
		for _, s := range gd.Specs {
			spec := s.(*ast.ImportSpec)
			path := strings.Trim(spec.Path.Value, `"`)
			name := path[strings.LastIndex(path, "/")+1:]
			if spec.Name != nil {
				name = spec.Name.Name
			}
			if name == "_" || name == "." || used[name] {
				kept = append(kept, s)
			}
		}
		gd.Specs = kept
	}
}
