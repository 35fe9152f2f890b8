package memory_test

import (
	"testing"

	"github.com/kefuhq/kefu/adapters/media/memory"
	"github.com/kefuhq/kefu/media"
	"github.com/kefuhq/kefu/media/mediatest"
)

func TestContract(t *testing.T) {
	mediatest.Run(t, func(t *testing.T) media.Backend { return memory.New() })
}
