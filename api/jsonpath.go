package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	"github.com/fleetjob/fleetjob/schemas"
)

// Decode errors name the field in the client's words: a JSON path with
// array indexes (steps[0].timeout), which encoding/json does not give.

// pathAt is the JSON path (steps[0].timeout) of the value that ends at or
// spans offset in body: where a type error was found.
func pathAt(body []byte, offset int64) string {
	type frame struct {
		array bool
		idx   int
		key   string
		value bool // an object frame's next token is a value
	}
	var stack []frame
	path := func() string {
		var b strings.Builder
		for _, f := range stack {
			switch {
			case f.array:
				fmt.Fprintf(&b, "[%d]", f.idx)
			case b.Len() > 0:
				b.WriteString("." + f.key)
			default:
				b.WriteString(f.key)
			}
		}
		return b.String()
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	for {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && !stack[len(stack)-1].array {
				stack[len(stack)-1].value = false
			}
			continue
		}
		if n := len(stack); n > 0 {
			top := &stack[n-1]
			if !top.array && !top.value {
				top.key, top.value = tok.(string), true
				continue
			}
			if top.array {
				top.idx++
			}
		}
		here := path()
		if d, ok := tok.(json.Delim); ok {
			if dec.InputOffset() >= offset {
				return here
			}
			stack = append(stack, frame{array: d == '[', idx: -1})
			continue
		}
		if dec.InputOffset() >= offset {
			return here
		}
		if n := len(stack); n > 0 && !stack[n-1].array {
			stack[n-1].value = false
		}
	}
}

// valuePath finds where in body a value a type's own decoder refused sits
// (encoding/json says nothing of where): the first value whose text is the
// refused one at a place of the body where into holds that type.
func valuePath(body []byte, into reflect.Type, ve *schemas.ValueError) string {
	want := compact(ve.Raw)
	var found string
	var walk func(dec *json.Decoder, path []any) error
	walk = func(dec *json.Decoder, path []any) error {
		start := dec.InputOffset()
		for start < int64(len(body)) && strings.IndexByte(" \t\r\n,:", body[start]) >= 0 {
			start++
		}
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			for dec.More() {
				key, err := dec.Token()
				if err != nil {
					return err
				}
				if err := walk(dec, append(path, key)); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil {
				return err
			}
		case json.Delim('['):
			for i := 0; dec.More(); i++ {
				if err := walk(dec, append(path, i)); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil {
				return err
			}
		}
		if found == "" && bytes.Equal(compact(body[start:dec.InputOffset()]), want) && typeAt(into, path) == ve.Type {
			found = pathString(path)
		}
		return nil
	}
	_ = walk(json.NewDecoder(bytes.NewReader(body)), nil)
	return found
}

func compact(b []byte) []byte {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return b
	}
	return buf.Bytes()
}

func pathString(path []any) string {
	var b strings.Builder
	for _, seg := range path {
		switch s := seg.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", s)
		default:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			fmt.Fprint(&b, s)
		}
	}
	return b.String()
}

// typeAt is the Go type that decodes the value at path of a value of type
// t, as encoding/json finds fields (json tags, embedded structs, names
// matched without case); nil when the path leads nowhere.
func typeAt(t reflect.Type, path []any) reflect.Type {
	for _, seg := range path {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch s := seg.(type) {
		case int:
			if t.Kind() != reflect.Slice && t.Kind() != reflect.Array {
				return nil
			}
			t = t.Elem()
		case string:
			switch t.Kind() {
			case reflect.Map:
				t = t.Elem()
			case reflect.Struct:
				if t = fieldType(t, s); t == nil {
					return nil
				}
			default:
				return nil
			}
		}
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

func fieldType(t reflect.Type, name string) reflect.Type {
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == "-" {
			continue
		}
		if f.Anonymous && tag == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if found := fieldType(ft, name); found != nil {
					return found
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if tag == "" {
			tag = f.Name
		}
		if strings.EqualFold(tag, name) {
			return f.Type
		}
	}
	return nil
}
