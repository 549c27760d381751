package console

import (
	"context"
	"net/http"
	"net/http/httptest"
)

// inproc is an http.RoundTripper that serves each request with the API's
// handler in this process: the request goes through the API's whole path
// (authentication, authorization, validation, audit) without a network hop.
type inproc struct{ h http.Handler }

type remoteKey struct{}

// withRemote records the browser's address, which the API sees as the
// request's source (it appears in the audit log).
func withRemote(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, remoteKey{}, addr)
}

func (t inproc) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.RequestURI = req.URL.RequestURI()
	r.Host = req.URL.Host
	if addr, ok := req.Context().Value(remoteKey{}).(string); ok {
		r.RemoteAddr = addr
	} else {
		r.RemoteAddr = "127.0.0.1:0"
	}
	if r.Body == nil {
		r.Body = http.NoBody
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}
