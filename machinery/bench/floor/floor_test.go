package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
)

func TestGreet(t *testing.T) {
	rec := httptest.NewRecorder()
	greet(rec, httptest.NewRequest(http.MethodGet, "/TutorialHero", nil))
	want := map[string]string{"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}
	for k, v := range want {
		if got := rec.Header().Get(k); got != v {
			t.Errorf("GET /TutorialHero: %s = %q, want %q", k, got, v)
		}
	}
	if rec.Code != http.StatusOK || rec.Body.String() != "Hello, TutorialHero!\n" {
		t.Errorf("GET /TutorialHero = %d %q, want 200 %q", rec.Code, rec.Body, "Hello, TutorialHero!\n")
	}
}

// TestLimitsAsHello keeps floor's http.Server limits the same expressions
// as hello's: a difference would show up in make bench as hello's cost.
func TestLimitsAsHello(t *testing.T) {
	hello, floor := serverFields(t, "../../../hello.go"), serverFields(t, "main.go")
	for _, k := range []string{"ReadHeaderTimeout", "ReadTimeout", "WriteTimeout", "IdleTimeout", "MaxHeaderBytes"} {
		if hello[k] == "" || floor[k] != hello[k] {
			t.Errorf("http.Server %s: floor sets %q, hello %q; want the same", k, floor[k], hello[k])
		}
	}
}

// serverFields returns the fields of the http.Server literal in a Go file,
// each with its value's source text.
func serverFields(t *testing.T, path string) map[string]string {
	src, err := os.ReadFile(path) // #nosec G304 -- hello.go or main.go, named by the test
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, src, 0)
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		lit, ok := n.(*ast.CompositeLit)
		if !ok {
			return true
		}
		if sel, ok := lit.Type.(*ast.SelectorExpr); !ok || sel.Sel.Name != "Server" {
			return true
		}
		for _, e := range lit.Elts {
			if kv, ok := e.(*ast.KeyValueExpr); ok {
				fields[kv.Key.(*ast.Ident).Name] = string(src[fset.Position(kv.Value.Pos()).Offset:fset.Position(kv.Value.End()).Offset])
			}
		}
		return false
	})
	if len(fields) == 0 {
		t.Fatalf("no http.Server literal in %s", path)
	}
	return fields
}

// BenchmarkGreet is hello's BenchmarkGreet (hello_test.go) with floor's
// handler, so that make bench compares like with like.
func BenchmarkGreet(b *testing.B) {
	r := httptest.NewRequest("GET", "/TutorialHero", nil)
	w := &discard{header: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.header)
		greet(w, r)
	}
}

// discard is a ResponseWriter that keeps nothing, so the benchmark measures the handler.
type discard struct{ header http.Header }

func (d *discard) Header() http.Header         { return d.header }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(int)             {}
