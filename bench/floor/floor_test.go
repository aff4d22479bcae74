package main

import (
	"net/http"
	"net/http/httptest"
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

func BenchmarkGreet(b *testing.B) {
	b.ReportAllocs()
	req := httptest.NewRequest(http.MethodGet, "/TutorialHero", nil)
	for b.Loop() {
		greet(httptest.NewRecorder(), req)
	}
}
