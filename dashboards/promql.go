package dashboards

import (
	"fmt"
	"strings"
	"unicode"
)

// Selector is one vector selector found in a PromQL expression: the metric
// name, the label names its matchers use, the function it is the direct
// argument of ("" when none), its range ("5m" in x[5m], "" for an instant
// selector), its offset ("1h" in x offset 1h) and the token right before
// it ("unless", "(", "+", ...).
type Selector struct {
	Metric string
	Labels []string
	Func   string
	Range  string
	Offset string
	After  string
}

// offsetAfter returns the duration of an "offset" modifier following
// tokens[i] (the selector's last token, or its range's "]"), or "".
func offsetAfter(tokens []token, i int) string {
	if i+1 < len(tokens) && tokens[i+1].kind == tokPunct && tokens[i+1].text == "[" {
		end, err := closing(tokens, i+1, "[", "]")
		if err != nil {
			return ""
		}
		i = end
	}
	if i+2 < len(tokens) && tokens[i+1].kind == tokIdent && tokens[i+1].text == "offset" {
		return tokens[i+2].text
	}
	return ""
}

func tokenBefore(tokens []token, i int) string {
	if i > 0 {
		return tokens[i-1].text
	}
	return ""
}

// enclosingFunc returns the function whose "(" directly precedes
// tokens[i], or "".
func enclosingFunc(tokens []token, i int) string {
	if i >= 2 && tokens[i-1].kind == tokPunct && tokens[i-1].text == "(" && tokens[i-2].kind == tokIdent {
		if _, keyword := promqlKeywords[tokens[i-2].text]; !keyword {
			return tokens[i-2].text
		}
	}
	return ""
}

// rangeAfter returns the text inside a [...] right after tokens[i], or "".
func rangeAfter(tokens []token, i int) string {
	if i+1 >= len(tokens) || tokens[i+1].kind != tokPunct || tokens[i+1].text != "[" {
		return ""
	}
	var parts []string
	for j := i + 2; j < len(tokens) && tokens[j].text != "]"; j++ {
		parts = append(parts, tokens[j].text)
	}
	return strings.Join(parts, "")
}

// promqlKeywords are words of PromQL that are neither metrics nor
// functions. Those followed by a label list in parentheses are marked.
var promqlKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true,
	"and": false, "or": false, "unless": false, "bool": false,
	"offset": false, "atan2": false, "inf": false, "nan": false,
}

// aggregations can be written "sum by (x) (expr)", so they are not always
// directly followed by "(".
var aggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true,
	"stdvar": true, "count": true, "count_values": true, "bottomk": true, "topk": true,
	"quantile": true, "limitk": true, "limit_ratio": true,
}

type tokenKind int

const (
	tokIdent tokenKind = iota
	tokNumber
	tokString
	tokVariable
	tokPunct
)

type token struct {
	kind tokenKind
	text string
}

// Selectors returns the vector selectors of a PromQL expression, which may
// contain Grafana variables ($job, ${datasource}, [[var]], $__range). It is
// a tokenizer, not a full parser: it understands strings, label matchers,
// range and subquery brackets, grouping label lists, function calls,
// keywords, numbers and durations, and reports unbalanced brackets,
// unterminated strings and unknown characters as errors.
func Selectors(expr string) ([]Selector, error) {
	tokens, err := tokenize(expr)
	if err != nil {
		return nil, err
	}
	var out []Selector
	for i := 0; i < len(tokens); i++ {
		t := tokens[i]
		switch {
		case t.kind == tokPunct && t.text == "{":
			// A selector without a metric name before it: {__name__="x"}.
			labels, name, end, err := matchers(tokens, i)
			if err != nil {
				return nil, err
			}
			if name == "" {
				return nil, fmt.Errorf("selector without a metric name in %q", expr)
			}
			out = append(out, Selector{Metric: name, Labels: labels, Func: enclosingFunc(tokens, i), Range: rangeAfter(tokens, end),
				Offset: offsetAfter(tokens, end), After: tokenBefore(tokens, i)})
			i = end
		case t.kind == tokPunct && t.text == "[":
			end, err := closing(tokens, i, "[", "]")
			if err != nil {
				return nil, err
			}
			i = end
		case t.kind == tokIdent:
			keyword, isKeyword := promqlKeywords[t.text]
			next := peek(tokens, i+1)
			switch {
			case isKeyword:
				if keyword && next.text == "(" {
					end, err := closing(tokens, i+1, "(", ")")
					if err != nil {
						return nil, err
					}
					i = end
				}
			case next.kind == tokPunct && next.text == "(":
				// A function call.
			case aggregations[t.text] && next.kind == tokIdent && (next.text == "by" || next.text == "without"):
				// An aggregation with its grouping before the argument.
			default:
				sel := Selector{Metric: t.text, Func: enclosingFunc(tokens, i), After: tokenBefore(tokens, i)}
				if next.kind == tokPunct && next.text == "{" {
					labels, name, end, err := matchers(tokens, i+1)
					if err != nil {
						return nil, err
					}
					if name != "" {
						return nil, fmt.Errorf("metric %s also names __name__ %q", t.text, name)
					}
					sel.Labels = labels
					i = end
				}
				sel.Range = rangeAfter(tokens, i)
				sel.Offset = offsetAfter(tokens, i)
				out = append(out, sel)
			}
		case t.kind == tokPunct && (t.text == "}" || t.text == "]"):
			return nil, fmt.Errorf("unbalanced %q in %q", t.text, expr)
		}
	}
	if err := balanced(tokens, expr); err != nil {
		return nil, err
	}
	return out, nil
}

// MetricNames returns the distinct metric names an expression selects, in
// order of first appearance.
func MetricNames(expr string) ([]string, error) {
	sels, err := Selectors(expr)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var names []string
	for _, s := range sels {
		if !seen[s.Metric] {
			seen[s.Metric] = true
			names = append(names, s.Metric)
		}
	}
	return names, nil
}

func peek(tokens []token, i int) token {
	if i < len(tokens) {
		return tokens[i]
	}
	return token{kind: tokPunct}
}

// matchers reads the label matchers starting at tokens[open] == "{" and
// returns the label names, the value of a __name__ matcher, and the index
// of the closing "}".
func matchers(tokens []token, open int) (labels []string, name string, end int, err error) {
	end, err = closing(tokens, open, "{", "}")
	if err != nil {
		return nil, "", 0, err
	}
	for j := open + 1; j < end; j++ {
		t := tokens[j]
		if t.kind != tokIdent && t.kind != tokString {
			if t.kind == tokPunct && (t.text == "," || t.text == "=" || t.text == "!=" || t.text == "=~" || t.text == "!~") {
				continue
			}
			return nil, "", 0, fmt.Errorf("unexpected %q in label matchers", t.text)
		}
		if t.kind == tokString {
			continue
		}
		op, value := peek(tokens, j+1), peek(tokens, j+2)
		if op.kind != tokPunct || (op.text != "=" && op.text != "!=" && op.text != "=~" && op.text != "!~") || value.kind != tokString {
			return nil, "", 0, fmt.Errorf("label %s: expected an operator and a string", t.text)
		}
		if t.text == "__name__" && op.text == "=" {
			name = unquote(value.text)
		} else {
			labels = append(labels, t.text)
		}
		j += 2
	}
	return labels, name, end, nil
}

func unquote(s string) string {
	if len(s) >= 2 {
		return s[1 : len(s)-1]
	}
	return s
}

// closing returns the index of the bracket that closes tokens[open].
func closing(tokens []token, open int, left, right string) (int, error) {
	depth := 0
	for j := open; j < len(tokens); j++ {
		if tokens[j].kind != tokPunct {
			continue
		}
		switch tokens[j].text {
		case left:
			depth++
		case right:
			depth--
			if depth == 0 {
				return j, nil
			}
		}
	}
	return 0, fmt.Errorf("%q without a matching %q", left, right)
}

func balanced(tokens []token, expr string) error {
	var stack []string
	pairs := map[string]string{")": "(", "]": "[", "}": "{"}
	for _, t := range tokens {
		if t.kind != tokPunct {
			continue
		}
		switch t.text {
		case "(", "[", "{":
			stack = append(stack, t.text)
		case ")", "]", "}":
			if len(stack) == 0 || stack[len(stack)-1] != pairs[t.text] {
				return fmt.Errorf("unbalanced %q in %q", t.text, expr)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if len(stack) > 0 {
		return fmt.Errorf("unclosed %q in %q", stack[len(stack)-1], expr)
	}
	return nil
}

func isIdentStart(r byte) bool { return r == '_' || r == ':' || unicode.IsLetter(rune(r)) }

func isIdentPart(r byte) bool { return isIdentStart(r) || (r >= '0' && r <= '9') }

func tokenize(expr string) ([]token, error) {
	var tokens []token
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			// A comment runs to the end of the line.
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(expr) && expr[j] != c {
				if expr[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			if j >= len(expr) {
				return nil, fmt.Errorf("unterminated string in %q", expr)
			}
			tokens = append(tokens, token{kind: tokString, text: expr[i : j+1]})
			i = j + 1
		case c == '$':
			j := i + 1
			switch {
			case j < len(expr) && expr[j] == '{':
				end := strings.IndexByte(expr[j:], '}')
				if end < 0 {
					return nil, fmt.Errorf("unterminated ${ in %q", expr)
				}
				j += end + 1
			default:
				for j < len(expr) && isIdentPart(expr[j]) && expr[j] != ':' {
					j++
				}
				if j == i+1 {
					return nil, fmt.Errorf("lone $ in %q", expr)
				}
			}
			tokens = append(tokens, token{kind: tokVariable, text: expr[i:j]})
			i = j
		case c == '[' && i+1 < len(expr) && expr[i+1] == '[':
			end := strings.Index(expr[i:], "]]")
			if end < 0 {
				return nil, fmt.Errorf("unterminated [[ in %q", expr)
			}
			tokens = append(tokens, token{kind: tokVariable, text: expr[i : i+end+2]})
			i += end + 2
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(expr) && expr[i+1] >= '0' && expr[i+1] <= '9':
			// Numbers, hex numbers, exponents and durations (5m, 1h30m).
			j := i
			for j < len(expr) && (isIdentPart(expr[j]) || expr[j] == '.') && expr[j] != ':' {
				if (expr[j] == 'e' || expr[j] == 'E') && j+1 < len(expr) && (expr[j+1] == '+' || expr[j+1] == '-') {
					j++
				}
				j++
			}
			tokens = append(tokens, token{kind: tokNumber, text: expr[i:j]})
			i = j
		case isIdentStart(c):
			j := i
			for j < len(expr) && isIdentPart(expr[j]) {
				j++
			}
			tokens = append(tokens, token{kind: tokIdent, text: expr[i:j]})
			i = j
		default:
			op := ""
			for _, candidate := range []string{"=~", "!~", "!=", "==", ">=", "<=", "(", ")", "{", "}", "[", "]", ",", "=", "+", "-", "*", "/", "%", "^", "<", ">", "@", ":"} {
				if strings.HasPrefix(expr[i:], candidate) {
					op = candidate
					break
				}
			}
			if op == "" {
				return nil, fmt.Errorf("unexpected character %q in %q", c, expr)
			}
			tokens = append(tokens, token{kind: tokPunct, text: op})
			i += len(op)
		}
	}
	return tokens, nil
}
