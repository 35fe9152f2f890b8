package media_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"strings"

	"github.com/kefuhq/kefu/adapters/media/local"
	"github.com/kefuhq/kefu/media"
)

// Saving a file someone sent: the type comes from the bytes, the key is
// random, and the name is kept only for display (with the real type's
// extension added when its own would make the file run when opened).
func ExampleStore_Save() {
	dir, err := os.MkdirTemp("", "kefu-media")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	backend, err := local.New(dir) // config media.dir
	if err != nil {
		log.Fatal(err)
	}
	defer backend.Close()
	store, err := media.New(backend, media.Options{MaxBytes: 20 << 20}) // config media.max_bytes
	if err != nil {
		log.Fatal(err)
	}

	ctx := context.Background()
	m, err := store.Save(ctx, strings.NewReader("Order #123 receipt\n"), "../receipt.exe")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(m.Type, m.Name, m.Size, strings.HasSuffix(m.Key, ".txt"))

	rc, _, err := store.Open(ctx, m.Key)
	if err != nil {
		log.Fatal(err)
	}
	defer rc.Close()
	body, _ := io.ReadAll(rc)
	fmt.Printf("%q\n", body)

	_, err = store.Save(ctx, strings.NewReader("<html><script>alert(1)</script></html>"), "cat.jpg")
	fmt.Println(err)
	// Output:
	// text/plain receipt.exe.txt 19 true
	// "Order #123 receipt\n"
	// invalid request: file type not allowed: text/html
}
