// Package moat_test holds repository meta-tests: every package documents
// itself, internal/domain stays free of I/O and is the only writer of its
// objects' states, and the reconcilers import no HTTP adapter.
package moat_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func goPackages(t *testing.T) map[string][]string {
	t.Helper()
	pkgs := map[string][]string{}
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules") && path != "." {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			pkgs[filepath.Dir(path)] = append(pkgs[filepath.Dir(path)], path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

func TestEveryPackageHasDoc(t *testing.T) {
	for dir, files := range goPackages(t) {
		documented := false
		for _, f := range files {
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ParseComments|parser.PackageClauseOnly)
			if err != nil {
				t.Fatal(err)
			}
			if af.Doc != nil && len(strings.TrimSpace(af.Doc.Text())) > 20 {
				documented = true
			}
		}
		if !documented {
			t.Errorf("package %s has no package doc comment", dir)
		}
	}
}

func TestDomainImportsNoIO(t *testing.T) {
	forbidden := []string{"os", "os/exec", "net", "net/http", "database/sql", "io/fs", "io/ioutil", "syscall", "log", "log/slog", "path/filepath"}
	files, _ := filepath.Glob("internal/domain/*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p := strings.Trim(imp.Path.Value, `"`)
			for _, bad := range forbidden {
				if p == bad {
					t.Errorf("%s imports %s: internal/domain must stay free of I/O", f, p)
				}
			}
			if strings.HasPrefix(p, "github.com/moatdb/moat/") {
				t.Errorf("%s imports %s: internal/domain imports no other Moat package", f, p)
			}
		}
	}
}

// listed is a package as `go list -json` describes it.
type listed struct {
	ImportPath string
	Dir        string
	Export     string
	GoFiles    []string
	Imports    []string
	Standard   bool
}

// goList runs `go list -json args...` and decodes its stream.
func goList(t *testing.T, args ...string) []listed {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list", "-json"}, args...)...).Output()
	if err != nil {
		t.Fatalf("go list %v: %v", args, err)
	}
	var pkgs []listed
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p listed
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

const module = "github.com/moatdb/moat/"

// stateWriters are the files of persisting packages allowed to write a
// domain object's State, each for a reason that is not a state change.
var stateWriters = map[string]string{
	// The store conformance suite (a library for both stores' tests)
	// stores fixtures in given states.
	"internal/store/storetest/storetest.go": "store conformance fixtures",
	"internal/store/storetest/bench.go":     "store benchmark fixtures",
}

// TestStateChangesOnlyInDomain: outside internal/domain, no non-test file
// of a package that persists objects (one that imports internal/store)
// assigns the State of a domain object (x.State = …, &x.State) or builds
// one with a State: key; every state change goes through a transition
// method of internal/domain. Packages that cannot store (the API's
// clients: the CLI, the Go client, the Terraform provider) may rebuild a
// snapshot of objects from the API's answers, states included, to run
// the domain's pure checks (domain.Explain, CheckAttach) on it. Types are
// checked (go/types over the compiler's export data), so other packages'
// own State fields (the simulator's routes, the local cloud's peerings,
// store records, wire types, reports) are not domain objects and pass.
func TestStateChangesOnlyInDomain(t *testing.T) {
	pkgs := goList(t, "-export", "-deps", "./...")
	exports := map[string]string{}
	for _, p := range pkgs {
		exports[p.ImportPath] = p.Export
	}
	fset := token.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		f, ok := exports[path]
		if !ok || f == "" {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(f)
	})
	root, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	const domainPath = module + "internal/domain"
	// The State of a domain object is domain.Meta's (every object embeds
	// Meta); reports and other domain values with a State are not objects.
	dom, err := imp.Import(domainPath)
	if err != nil {
		t.Fatal(err)
	}
	meta := dom.Scope().Lookup("Meta").Type().Underlying().(*types.Struct)
	var metaState types.Object
	for i := range meta.NumFields() {
		if meta.Field(i).Name() == "State" {
			metaState = meta.Field(i)
		}
	}
	if metaState == nil {
		t.Fatal("domain.Meta has no State field")
	}
	isDomainState := func(obj types.Object) bool { return obj == metaState }
	persists := func(p listed) bool {
		return p.ImportPath == module+"internal/store" || slices.Contains(p.Imports, module+"internal/store")
	}
	checked := 0
	for _, p := range pkgs {
		if p.Standard || !strings.HasPrefix(p.ImportPath, module) || p.ImportPath == domainPath || !persists(p) {
			continue
		}
		var files []*ast.File
		for _, name := range p.GoFiles {
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
		info := &types.Info{Selections: map[*ast.SelectorExpr]*types.Selection{}, Uses: map[*ast.Ident]types.Object{}}
		if _, err := (&types.Config{Importer: imp}).Check(p.ImportPath, fset, files, info); err != nil {
			t.Fatalf("type-check %s: %v", p.ImportPath, err)
		}
		checked++
		report := func(n ast.Node, what string) {
			pos := fset.Position(n.Pos())
			rel, _ := filepath.Rel(root, pos.Filename)
			if _, ok := stateWriters[filepath.ToSlash(rel)]; ok {
				return
			}
			t.Errorf("%s:%d: %s a domain object's State: use a transition method of internal/domain", rel, pos.Line, what)
		}
		stateSel := func(e ast.Expr) bool {
			sel, ok := ast.Unparen(e).(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "State" {
				return false
			}
			s := info.Selections[sel]
			return s != nil && isDomainState(s.Obj())
		}
		for _, f := range files {
			ast.Inspect(f, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.AssignStmt:
					for _, lhs := range n.Lhs {
						if stateSel(lhs) {
							report(lhs, "assigns")
						}
					}
				case *ast.UnaryExpr:
					if n.Op == token.AND && stateSel(n.X) {
						report(n, "takes the address of")
					}
				case *ast.KeyValueExpr:
					if id, ok := n.Key.(*ast.Ident); ok && id.Name == "State" && info.Uses[id] != nil && isDomainState(info.Uses[id]) {
						report(n, "builds (State:)")
					}
				}
				return true
			})
		}
	}
	if checked < 6 {
		t.Fatalf("checked %d packages: the scan missed the module", checked)
	}
}

// TestReconcileServesNoHTTP: the reconcilers are a library of the control
// plane, not an HTTP adapter: they import neither the API server nor any
// package of ours that serves or calls the API.
func TestReconcileServesNoHTTP(t *testing.T) {
	forbidden := []string{"internal/apiserver", "internal/controlplane", "internal/client", "internal/cli", "internal/up"}
	for _, p := range goList(t, "-deps", "./internal/reconcile") {
		for _, f := range forbidden {
			if p.ImportPath == module+f {
				t.Errorf("internal/reconcile depends on %s", f)
			}
		}
	}
}
