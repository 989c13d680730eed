package keypool

import (
	"go/ast"
	"go/doc"
	"go/doc/comment"
	"go/parser"
	"go/token"
	"regexp"
	"strings"
	"testing"
)

// The decision table is in the package documentation, under its own
// heading, as a block that go doc shows as it is, with a row for each
// kind of answer: what the README and the code comments point to.
func TestPackageDocHoldsTheDecisionTable(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "doc.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	pkg, err := doc.NewFromFiles(fset, []*ast.File{f}, "github.com/keypool/keypool")
	if err != nil {
		t.Fatal(err)
	}
	var table *comment.Code
	inSection := false
	for _, b := range pkg.Parser().Parse(pkg.Doc).Content {
		switch b := b.(type) {
		case *comment.Heading:
			inSection = plainText(b.Text) == "The decision table"
		case *comment.Code:
			if inSection && table == nil {
				table = b
			}
		}
	}
	if table == nil {
		t.Fatal(`no code block under a "# The decision table" heading in doc.go's package documentation`)
	}
	rows := strings.Split(table.Text, "\n")
	if !strings.HasPrefix(rows[0], "upstream signal") {
		t.Errorf("the table starts %q, want its column names (upstream signal, scope, action)", rows[0])
	}
	for _, signal := range []string{"2xx", "400, 404, 422", "401, 403", "402", "429 with a retry hint", "429 without a hint", "408, 409, 5xx"} {
		found := false
		for _, r := range rows {
			// A row: the signal, its scope and its action, in columns
			// apart by two spaces or more.
			if cols := columnGap.Split(r, -1); len(cols) >= 3 && strings.HasPrefix(cols[0], signal) {
				found = true
			}
		}
		if !found {
			t.Errorf("the decision table has no row for %s", signal)
		}
	}
}

// columnGap parts the columns of the decision table.
var columnGap = regexp.MustCompile(` {2,}`)

// plainText is the text of a doc comment's inline elements.
func plainText(txt []comment.Text) string {
	var b strings.Builder
	for _, x := range txt {
		switch x := x.(type) {
		case comment.Plain:
			b.WriteString(string(x))
		case comment.Italic:
			b.WriteString(string(x))
		}
	}
	return b.String()
}
