package schemas

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRollingBatches(t *testing.T) {
	for _, c := range []struct {
		expr string
		n    int
		want []int
	}{
		{"1 50% 100%", 10, []int{1, 6, 10}},
		{"1 10% 30% 100%", 100, []int{1, 11, 41, 100}},
		{"2", 7, []int{2, 4, 6, 7}},
		{"25%", 10, []int{3, 6, 9, 10}},
		{"1 +2", 12, []int{1, 4, 9, 12}},
		{"1 *2", 20, []int{1, 3, 7, 15, 20}},
		{"100%", 5, []int{5}},
		{"5 100%", 3, []int{3}},
		{"10%", 3, []int{1, 2, 3}},
		{"5 *2", 100, []int{5, 15, 35, 75, 100}},
		{"5 +10", 100, []int{5, 20, 45, 80, 100}},
		{"30%", 100, []int{30, 60, 90, 100}},
		{"10 20 20 20 100%", 100, []int{10, 30, 50, 70, 100}},
	} {
		got, err := RollingBatches(c.expr, c.n)
		if err != nil {
			t.Errorf("%q on %d: %v", c.expr, c.n, err)
			continue
		}
		if diff := cmp.Diff(got, c.want); diff != "" {
			t.Errorf("%q on %d (-got +want)\n%s", c.expr, c.n, diff)
		}
	}
}

func TestRollingRejects(t *testing.T) {
	for _, expr := range []string{"", "0", "0%", "100% 1", "+1", "1 +1 2", "1 *0", "101%", "x", "1 -2", "1 ++2", "5%%", "1.5"} {
		var fe FieldErrors
		(&Rolling{Expr: expr, Mode: 1}).validate("r", &fe)
		if len(fe) == 0 {
			t.Errorf("%q accepted", expr)
		}
	}
	var fe FieldErrors
	(&Rolling{Expr: "1", Mode: 4}).validate("r", &fe)
	if len(fe) == 0 {
		t.Error("mode 4 accepted")
	}
}

func TestRollingBatchLimit(t *testing.T) {
	if _, err := RollingBatches("1", 501); err == nil {
		t.Error("501 batches accepted")
	}
	if b, err := RollingBatches("1", 500); err != nil || len(b) != 500 {
		t.Errorf("500 batches: %d %v", len(b), err)
	}
}
