package e2e

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryTestSaysHowItRuns keeps the package's rule (doc.go): every
// test either calls t.Parallel() first or says in its doc comment why it
// runs alone ("Serial: ..."). It needs no root.
func TestEveryTestSaysHowItRuns(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	tests := 0
	for _, f := range files {
		af, err := parser.ParseFile(fset, f, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv != nil || !strings.HasPrefix(fn.Name.Name, "Test") || fn.Name.Name == "TestMain" {
				continue
			}
			tests++
			if strings.Contains(fn.Doc.Text(), "Serial: ") || callsParallelFirst(fn) {
				continue
			}
			t.Errorf("%s: %s neither calls t.Parallel() first nor says why it runs alone (a \"Serial: why\" paragraph in its doc comment); see doc.go", fset.Position(fn.Pos()), fn.Name.Name)
		}
	}
	if tests < 10 {
		t.Errorf("found %d tests in %v, want the package's", tests, files)
	}
}

// callsParallelFirst reports whether fn's first statement is t.Parallel().
func callsParallelFirst(fn *ast.FuncDecl) bool {
	if fn.Body == nil || len(fn.Body.List) == 0 {
		return false
	}
	es, ok := fn.Body.List[0].(*ast.ExprStmt)
	if !ok {
		return false
	}
	call, ok := es.X.(*ast.CallExpr)
	if !ok {
		return false
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	return ok && sel.Sel.Name == "Parallel" && len(call.Args) == 0
}
