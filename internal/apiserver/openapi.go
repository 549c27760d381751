package apiserver

import (
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/moatdb/moat/internal/apitype"
)

// openapi serves the OpenAPI 3.1 document generated from the route table,
// so it cannot drift from the routes.
func (s *Server) openapi(c *call) error {
	s.docOnce.Do(func() { s.doc = s.OpenAPI() })
	return c.reply(0, s.doc)
}

var pathParam = regexp.MustCompile(`\{([a-z_]+)\}`)

// OpenAPI returns the API's OpenAPI 3.1 document.
func (s *Server) OpenAPI() map[string]any {
	g := &schemaGen{defs: map[string]any{}}
	paths := map[string]map[string]any{}
	for _, rt := range s.routes {
		op := map[string]any{
			"operationId": opID(rt),
			"summary":     rt.Summary,
		}
		var params []any
		for _, m := range pathParam.FindAllStringSubmatch(rt.Pattern, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		if rt.Method == "GET" && rt.ContentType == "" && strings.HasSuffix(rt.Pattern, "s") || strings.HasSuffix(rt.Pattern, "/audit") {
			params = append(params,
				map[string]any{"name": "limit", "in": "query", "schema": map[string]any{"type": "integer", "minimum": 1, "maximum": maxPageSize}},
				map[string]any{"name": "page_token", "in": "query", "schema": map[string]any{"type": "string"}})
		}
		if rt.Method == "POST" && rt.Status == http.StatusCreated {
			params = append(params, map[string]any{"name": "Idempotency-Key", "in": "header", "schema": map[string]any{"type": "string", "maxLength": maxIdempotencyKey}})
		}
		if rt.Method == "PUT" || rt.Method == "DELETE" || strings.HasSuffix(rt.Pattern, "/attach") || strings.HasSuffix(rt.Pattern, "/detach") {
			params = append(params, map[string]any{"name": "If-Match", "in": "header", "schema": map[string]any{"type": "string"}})
		}
		if params != nil {
			op["parameters"] = params
		}
		if rt.Access != Public {
			op["security"] = []any{map[string]any{"bearer": []any{}}}
		}
		if rt.Request != nil {
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{
				"application/json": map[string]any{"schema": g.ref(reflect.TypeOf(rt.Request))}}}
		}
		status := rt.Status
		if status == 0 {
			status = http.StatusOK
		}
		ok := map[string]any{"description": http.StatusText(status)}
		switch {
		case rt.ContentType != "":
			ok["content"] = map[string]any{rt.ContentType: map[string]any{"schema": map[string]any{"type": "string"}}}
		case rt.Response != nil:
			ok["content"] = map[string]any{"application/json": map[string]any{"schema": g.ref(reflect.TypeOf(rt.Response))}}
		default:
			ok["content"] = map[string]any{"application/json": map[string]any{"schema": map[string]any{"type": "object"}}}
		}
		problem := map[string]any{"description": "problem details", "content": map[string]any{
			"application/problem+json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Problem"}}}}
		responses := map[string]any{strconv.Itoa(status): ok, "default": problem}
		if rt.Accepted != nil {
			responses[strconv.Itoa(http.StatusAccepted)] = map[string]any{"description": http.StatusText(http.StatusAccepted),
				"content": map[string]any{"application/json": map[string]any{"schema": g.ref(reflect.TypeOf(rt.Accepted))}}}
		}
		op["responses"] = responses
		if paths[rt.Pattern] == nil {
			paths[rt.Pattern] = map[string]any{}
		}
		paths[rt.Pattern][strings.ToLower(rt.Method)] = op
	}
	g.ref(reflect.TypeOf(apitype.Problem{}))
	return map[string]any{
		"openapi": "3.1.0",
		"info":    map[string]any{"title": "Moat API", "version": "v1", "description": "Managed PostgreSQL with private networking; see DESIGN.md."},
		"paths":   paths,
		"components": map[string]any{
			"schemas":         g.defs,
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
		},
	}
}

func opID(rt Route) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(rt.Method))
	for _, part := range strings.Split(strings.TrimPrefix(rt.Pattern, "/v1/"), "/") {
		if strings.HasPrefix(part, "{") {
			continue
		}
		part = strings.NewReplacer(".", "_", "-", "_").Replace(part)
		b.WriteString("_" + part)
	}
	return b.String()
}

// schemaGen turns Go wire types into JSON Schema components.
type schemaGen struct {
	defs map[string]any
}

var timeType = reflect.TypeOf(time.Time{})

func schemaName(t reflect.Type) string {
	n := t.Name()
	if i := strings.IndexByte(n, '['); i >= 0 { // List[pkg.T] → TList
		inner := n[i+1 : len(n)-1]
		inner = inner[strings.LastIndexByte(inner, '.')+1:]
		n = inner + n[:i]
	}
	return n
}

func (g *schemaGen) ref(t reflect.Type) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t.Kind() == reflect.Struct:
		name := schemaName(t)
		if _, ok := g.defs[name]; !ok {
			g.defs[name] = nil // break cycles
			g.defs[name] = g.object(t)
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	case t.Kind() == reflect.Slice:
		return map[string]any{"type": "array", "items": g.ref(t.Elem())}
	case t.Kind() == reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.ref(t.Elem())}
	case t.Kind() == reflect.String:
		return map[string]any{"type": "string"}
	case t.Kind() == reflect.Bool:
		return map[string]any{"type": "boolean"}
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return map[string]any{"type": "integer"}
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return map[string]any{"type": "number"}
	}
	return map[string]any{}
}

func (g *schemaGen) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		props[name] = g.ref(f.Type)
		if !strings.Contains(opts, "omitempty") && f.Type.Kind() != reflect.Pointer {
			required = append(required, name)
		}
	}
	out := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		out["required"] = required
	}
	return out
}
