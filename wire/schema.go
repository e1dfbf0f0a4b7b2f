package wire

import (
	"embed"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

//go:embed *.fbs
var schemaFiles embed.FS

// kind is the shape of a field's value as laid out in a buffer.
type kind int

const (
	kindScalar kind = iota // fixed-size inline value (numbers, bools, enums)
	kindStruct             // fixed-size inline struct
	kindString             // offset to a length-prefixed byte string
	kindTable              // offset to a table
	kindVector             // offset to a length-prefixed vector
)

// fieldType describes a field's type well enough to bounds-check it.
type fieldType struct {
	kind  kind
	size  int        // inline size of scalars and structs
	align int        // alignment of scalars and structs
	table string     // table name, for kindTable
	elem  *fieldType // element type, for kindVector
}

// field is one slot of a table, in declaration order.
type field struct {
	name     string
	typ      fieldType
	required bool
}

// Schema is the parsed form of the wire schema: enough of it to verify that
// a buffer can be read by the generated accessors without going out of
// bounds.
type Schema struct {
	tables map[string][]field
	// services maps "Service/Method" to the request and reply table names.
	services map[string][2]string
}

// scalarSizes gives the size in bytes of each FlatBuffers scalar type.
var scalarSizes = map[string]int{
	"bool": 1, "byte": 1, "ubyte": 1, "int8": 1, "uint8": 1,
	"short": 2, "ushort": 2, "int16": 2, "uint16": 2,
	"int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4,
	"long": 8, "ulong": 8, "int64": 8, "uint64": 8, "double": 8, "float64": 8,
}

// loadSchema parses the schema files embedded in the package.
func loadSchema() (*Schema, error) {
	names, err := schemaFiles.ReadDir(".")
	if err != nil {
		return nil, err
	}
	var srcs []string
	for _, e := range names {
		b, err := schemaFiles.ReadFile(e.Name())
		if err != nil {
			return nil, err
		}
		srcs = append(srcs, string(b))
	}
	return parseSchema(srcs...)
}

// parseSchema parses FlatBuffers schema sources. It understands the subset
// the project uses: namespace, include, attribute, enum, struct, table,
// root_type, file_identifier and rpc_service. Unions and explicit field ids
// are rejected, because the verifier does not handle them.
func parseSchema(srcs ...string) (*Schema, error) {
	p := &schemaParser{
		structs: map[string]fieldType{},
		enums:   map[string]fieldType{},
		tables:  map[string][]rawField{},
		s:       &Schema{tables: map[string][]field{}, services: map[string][2]string{}},
	}
	for _, src := range srcs {
		toks, err := tokenize(src)
		if err != nil {
			return nil, err
		}
		p.toks, p.pos = toks, 0
		if err := p.file(); err != nil {
			return nil, err
		}
	}
	return p.resolve()
}

// rawField is a table field before type names are resolved.
type rawField struct {
	name, typ string
	vector    bool
	required  bool
}

type schemaParser struct {
	toks    []string
	pos     int
	structs map[string]fieldType
	enums   map[string]fieldType
	tables  map[string][]rawField
	order   []string
	s       *Schema
}

func (p *schemaParser) next() string {
	if p.pos >= len(p.toks) {
		return ""
	}
	t := p.toks[p.pos]
	p.pos++
	return t
}

func (p *schemaParser) peek() string {
	if p.pos >= len(p.toks) {
		return ""
	}
	return p.toks[p.pos]
}

func (p *schemaParser) expect(want string) error {
	if got := p.next(); got != want {
		return fmt.Errorf("schema: expected %q, found %q", want, got)
	}
	return nil
}

// skipTo consumes tokens up to and including the first occurrence of tok.
func (p *schemaParser) skipTo(tok string) error {
	for {
		switch p.next() {
		case tok:
			return nil
		case "":
			return fmt.Errorf("schema: missing %q", tok)
		}
	}
}

func (p *schemaParser) file() error {
	for p.peek() != "" {
		switch kw := p.next(); kw {
		case "namespace", "include", "attribute", "root_type", "file_identifier", "file_extension":
			if err := p.skipTo(";"); err != nil {
				return err
			}
		case "enum":
			if err := p.enum(); err != nil {
				return err
			}
		case "struct":
			if err := p.structDecl(); err != nil {
				return err
			}
		case "table":
			if err := p.table(); err != nil {
				return err
			}
		case "rpc_service":
			if err := p.service(); err != nil {
				return err
			}
		default:
			return fmt.Errorf("schema: unsupported declaration %q", kw)
		}
	}
	return nil
}

// attrs parses an optional "( ... )" attribute list and returns the
// attribute names.
func (p *schemaParser) attrs() ([]string, error) {
	if p.peek() != "(" {
		return nil, nil
	}
	p.next()
	var names []string
	expectName := true
	for {
		t := p.next()
		switch {
		case t == "":
			return nil, fmt.Errorf("schema: unterminated attribute list")
		case t == ")":
			return names, nil
		case t == ",":
			expectName = true
		case expectName:
			names = append(names, t)
			expectName = false
		}
	}
}

func (p *schemaParser) enum() error {
	name := p.next()
	if err := p.expect(":"); err != nil {
		return err
	}
	base := p.next()
	size, ok := scalarSizes[base]
	if !ok {
		return fmt.Errorf("schema: enum %s: bad underlying type %q", name, base)
	}
	if _, err := p.attrs(); err != nil {
		return err
	}
	if err := p.expect("{"); err != nil {
		return err
	}
	p.enums[name] = fieldType{kind: kindScalar, size: size, align: size}
	return p.skipTo("}")
}

func (p *schemaParser) structDecl() error {
	name := p.next()
	if _, err := p.attrs(); err != nil {
		return err
	}
	if err := p.expect("{"); err != nil {
		return err
	}
	off, maxAlign := 0, 1
	for p.peek() != "}" {
		fname := p.next()
		if err := p.expect(":"); err != nil {
			return err
		}
		tname := p.next()
		ft, ok := p.inlineType(tname)
		if !ok {
			return fmt.Errorf("schema: struct %s.%s: unsupported type %q", name, fname, tname)
		}
		if err := p.skipTo(";"); err != nil {
			return err
		}
		off = alignUp(off, ft.align) + ft.size
		maxAlign = max(maxAlign, ft.align)
	}
	p.next()
	p.structs[name] = fieldType{kind: kindStruct, size: alignUp(off, maxAlign), align: maxAlign}
	return nil
}

func alignUp(n, a int) int { return (n + a - 1) / a * a }

// inlineType resolves a scalar, enum or (already declared) struct type.
func (p *schemaParser) inlineType(name string) (fieldType, bool) {
	if size, ok := scalarSizes[name]; ok {
		return fieldType{kind: kindScalar, size: size, align: size}, true
	}
	if ft, ok := p.enums[name]; ok {
		return ft, true
	}
	ft, ok := p.structs[name]
	return ft, ok
}

func (p *schemaParser) table() error {
	name := p.next()
	if _, ok := p.tables[name]; ok {
		return fmt.Errorf("schema: table %s declared twice", name)
	}
	if _, err := p.attrs(); err != nil {
		return err
	}
	if err := p.expect("{"); err != nil {
		return err
	}
	var fields []rawField
	for p.peek() != "}" {
		f := rawField{name: p.next()}
		if err := p.expect(":"); err != nil {
			return err
		}
		if p.peek() == "[" {
			p.next()
			f.vector = true
			f.typ = p.next()
			if err := p.expect("]"); err != nil {
				return err
			}
		} else {
			f.typ = p.next()
		}
		if p.peek() == "=" {
			p.next()
			p.next()
		}
		attrs, err := p.attrs()
		if err != nil {
			return err
		}
		for _, a := range attrs {
			switch a {
			case "id":
				return fmt.Errorf("schema: %s.%s: explicit field ids are not supported", name, f.name)
			case "required":
				f.required = true
			}
		}
		if err := p.expect(";"); err != nil {
			return err
		}
		fields = append(fields, f)
	}
	p.next()
	p.tables[name] = fields
	p.order = append(p.order, name)
	return nil
}

func (p *schemaParser) service() error {
	svc := p.next()
	if err := p.expect("{"); err != nil {
		return err
	}
	for p.peek() != "}" {
		method := p.next()
		if err := p.expect("("); err != nil {
			return err
		}
		req := p.next()
		if err := p.expect(")"); err != nil {
			return err
		}
		if err := p.expect(":"); err != nil {
			return err
		}
		reply := p.next()
		if _, err := p.attrs(); err != nil {
			return err
		}
		if err := p.expect(";"); err != nil {
			return err
		}
		p.s.services[svc+"/"+method] = [2]string{req, reply}
	}
	p.next()
	return nil
}

// resolve turns raw fields into typed ones once every declaration is known.
func (p *schemaParser) resolve() (*Schema, error) {
	elemType := func(tname string) (fieldType, error) {
		if tname == "string" {
			return fieldType{kind: kindString}, nil
		}
		if ft, ok := p.inlineType(tname); ok {
			return ft, nil
		}
		if _, ok := p.tables[tname]; ok {
			return fieldType{kind: kindTable, table: tname}, nil
		}
		return fieldType{}, fmt.Errorf("schema: unknown type %q", tname)
	}
	for _, tname := range p.order {
		var fields []field
		for _, rf := range p.tables[tname] {
			ft, err := elemType(rf.typ)
			if err != nil {
				return nil, fmt.Errorf("%w in %s.%s", err, tname, rf.name)
			}
			if rf.vector {
				elem := ft
				ft = fieldType{kind: kindVector, elem: &elem}
			}
			fields = append(fields, field{name: rf.name, typ: ft, required: rf.required})
		}
		p.s.tables[tname] = fields
	}
	for m, rr := range p.s.services {
		for _, t := range rr {
			if _, ok := p.s.tables[t]; !ok {
				return nil, fmt.Errorf("schema: %s uses %q, which is not a table", m, t)
			}
		}
	}
	return p.s, nil
}

// Tables lists the schema's table names in sorted order.
func (s *Schema) Tables() []string {
	names := make([]string, 0, len(s.tables))
	for n := range s.tables {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// tokenize splits a schema into identifiers, numbers, strings and
// punctuation, dropping comments.
func tokenize(src string) ([]string, error) {
	var toks []string
	for i := 0; i < len(src); {
		c := rune(src[i])
		switch {
		case unicode.IsSpace(c):
			i++
		case strings.HasPrefix(src[i:], "//"):
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case strings.HasPrefix(src[i:], "/*"):
			end := strings.Index(src[i+2:], "*/")
			if end < 0 {
				return nil, fmt.Errorf("schema: unterminated comment")
			}
			i += end + 4
		case c == '"':
			end := strings.IndexByte(src[i+1:], '"')
			if end < 0 {
				return nil, fmt.Errorf("schema: unterminated string")
			}
			s, err := strconv.Unquote(src[i : i+end+2])
			if err != nil {
				return nil, fmt.Errorf("schema: bad string: %w", err)
			}
			toks = append(toks, s)
			i += end + 2
		case strings.ContainsRune("{}()[]:;=,", c):
			toks = append(toks, string(c))
			i++
		case c == '_' || c == '-' || c == '+' || c == '.' || unicode.IsLetter(c) || unicode.IsDigit(c):
			j := i
			for j < len(src) && (src[j] == '_' || src[j] == '-' || src[j] == '+' || src[j] == '.' ||
				unicode.IsLetter(rune(src[j])) || unicode.IsDigit(rune(src[j]))) {
				j++
			}
			toks = append(toks, src[i:j])
			i = j
		default:
			return nil, fmt.Errorf("schema: unexpected character %q", c)
		}
	}
	return toks, nil
}
