package riskrules_test

import (
	"errors"
	"fmt"

	"github.com/fleetjob/fleetjob/api/riskrules"
)

func ExampleEngine_Check() {
	rules, err := riskrules.New(riskrules.Defaults())
	if err != nil {
		panic(err)
	}
	script := "#!/bin/bash\n# rm -rf / is only a comment here\napt-get install -y nginx\nreboot\ncd /tmp && sudo rm -rf /*\n"
	findings, err := rules.Check("bash", script)
	for _, f := range findings {
		fmt.Printf("line %d %s %s: %s\n", f.Line, f.Action, f.RuleID, f.Text)
	}
	fmt.Println(errors.Is(err, riskrules.ErrIntercepted), err)
	// Output:
	// line 4 scan shutdown-reboot: reboot
	// line 5 intercept rm-root: cd /tmp && sudo rm -rf /*
	// true script line 5 matches high-risk rule "rm-root" (recursive rm of / or a top-level system directory): refused
}

func Example_extendDefaults() {
	// A rule file replaces the defaults; append them to extend instead:
	//
	//	own, err := riskrules.Load("/etc/fleetjob/risk-rules.json")
	//	rules, err := riskrules.New(append(riskrules.Defaults(), own...))
	own := []riskrules.Rule{{
		ID:          "curl-pipe-sh",
		Languages:   []string{"bash", "sh"},
		Pattern:     `curl[^|]*\|\s*(sudo\s+)?(ba)?sh\b`,
		Action:      riskrules.ActionScan,
		Description: "pipes a download into a shell",
	}}
	rules, err := riskrules.New(append(riskrules.Defaults(), own...))
	if err != nil {
		panic(err)
	}
	findings, err := rules.Check("sh", "curl -fsSL https://get.example.com | sudo sh")
	fmt.Println(findings[0].RuleID, findings[0].Action, err)
	// Output:
	// curl-pipe-sh scan <nil>
}
