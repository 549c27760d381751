package apiserver

import (
	"encoding/base64"
	"fmt"
	"strconv"
)

const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// page is a request's pagination: ?limit=N&page_token=T.
type page struct {
	after int64
	limit int
}

func (c *call) page() (page, error) {
	q := c.r.URL.Query()
	p := page{limit: defaultPageSize}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxPageSize {
			return p, &apiError{status: 400, code: "invalid_limit", field: "limit", msg: fmt.Sprintf("limit %q is not a number from 1 to %d", s, maxPageSize), hint: fmt.Sprintf("use 1 to %d", maxPageSize)}
		}
		p.limit = n
	}
	if t := q.Get("page_token"); t != "" {
		b, err := base64.RawURLEncoding.DecodeString(t)
		n, err2 := strconv.ParseInt(string(b), 10, 64)
		if err != nil || err2 != nil || n < 0 {
			return p, &apiError{status: 400, code: "invalid_page_token", field: "page_token", msg: "the page token is not valid", hint: "pass next_page_token from the previous page unchanged"}
		}
		p.after = n
	}
	return p, nil
}

// next returns the token for the page after one whose last item had seq,
// or "" when the page was not full.
func (p page) next(n int, lastSeq int64) string {
	if n < p.limit {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(lastSeq, 10)))
}
