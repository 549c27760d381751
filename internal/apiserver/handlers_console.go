package apiserver

import (
	"net/http"
	"strings"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/store"
)

// createConsoleLink mints a one-time console sign-in link that stands for
// the caller's own operator token (`moat console link`): for an operator
// whose link from `moat up` or `moat server` was spent or expired, or who
// signs in from another machine. The answer is a credential (the code
// signs in as the operator once); the audit entry records who asked.
func (s *Server) createConsoleLink(c *call) error {
	if s.cfg.SignInLink == nil {
		return &apiError{status: http.StatusNotImplemented, code: "console_unavailable",
			msg: "this server serves no console", hint: "sign-in links come from the control plane's own API (moat server or moat up)"}
	}
	token, _ := strings.CutPrefix(c.r.Header.Get("Authorization"), "Bearer ")
	if err := c.mutate(func(store.Tx) error { return nil }); err != nil { // the audit entry alone
		return err
	}
	path, expires := s.cfg.SignInLink(token)
	return c.reply(c.rt.Status, apitype.ConsoleLink{URL: "https://" + c.r.Host + path, ExpiresAt: expires.UTC()})
}
