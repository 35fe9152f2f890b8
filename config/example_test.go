package config_test

import (
	"errors"
	"fmt"

	"github.com/kefuhq/kefu/config"
)

func ExampleParse() {
	src := []byte(`
server:
  adr: ":8080"
node_id: ${NODE}
routing:
  max_open_per_agent: lots
bus:
  driver: redis
`)
	_, err := config.Parse("kefu.yaml", src, func(string) (string, bool) { return "", false })
	var errs *config.Errors
	if errors.As(err, &errs) {
		for _, e := range *errs {
			fmt.Println(e)
		}
	}
	// Output:
	// kefu.yaml:3: server.adr: unknown key (did you mean "addr"?)
	// kefu.yaml:4: node_id: environment variable NODE is not set (write ${NODE:-default} to give a default)
	// kefu.yaml:6: routing.max_open_per_agent: expected an integer, got "lots"
	// kefu.yaml:7: bus.url: required when driver is redis (a redis:// or rediss:// URL)
}
