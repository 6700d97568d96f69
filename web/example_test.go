package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	apiv1 "github.com/weftnet/weft/api/v1"
	"github.com/weftnet/weft/web"
)

type noHosts struct{}

func (noHosts) List(context.Context, string, string, apiv1.LabelSelector) ([]apiv1.Object, int64) {
	return nil, 0
}

// The controller mounts the UI beside its API and sends / to it.
func ExampleNew() {
	api := http.NotFoundHandler() // the controller's is controller/rest's handler
	ui, err := web.New(web.Config{API: api, Hosts: noHosts{}})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", api)
	mux.Handle(web.Prefix, ui)
	mux.Handle("GET /{$}", http.RedirectHandler(web.Prefix, http.StatusFound))

	for _, path := range []string{"/", "/ui/", "/ui/static/app.js"} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		fmt.Println(path, rec.Code, rec.Header().Get("Content-Type"))
	}
	// Output:
	// / 302 text/html; charset=utf-8
	// /ui/ 200 text/html; charset=utf-8
	// /ui/static/app.js 200 text/javascript; charset=utf-8
}
