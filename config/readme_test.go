package config_test

import (
	"os"
	"strings"
	"testing"

	"github.com/ensure-user/ensure-user/config"
)

// TestREADMEListsEveryVariable keeps the README's configuration table in
// step with the code.
func TestREADMEListsEveryVariable(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range config.Vars {
		if !strings.Contains(string(readme), "`"+v.Name+"`") {
			t.Errorf("README.md does not document %s", v.Name)
		}
	}
}
