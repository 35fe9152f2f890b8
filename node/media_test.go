package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/kefuhq/kefu/channels/web" // the "web" channel type
	"github.com/kefuhq/kefu/channels/web/webtest"
	"github.com/kefuhq/kefu/internal/testenv"
	"github.com/kefuhq/kefu/node/nodetest"
)

// Two nodes with media.driver postgres on one PostgreSQL: an image a
// visitor uploads through node A is served by node B, to the visitor and
// to an agent, ranges included, and no file lands in either node's folder.
func TestMediaAcrossNodes(t *testing.T) {
	dsn := testenv.PostgresSchema(t)
	const origin = "https://shop.example.com"
	yaml := func(node string) string {
		return fmt.Sprintf(`
node_id: %s
store: {driver: postgres, dsn: %q}
media: {driver: postgres}
routing: {offline_reply: ""}
agents:
  - {email: alice@example.com, name: Alice, password: alice-password}
channels:
  web: {enabled: true, allowed_origins: [%q]}
`, node, dsn, origin)
	}
	a := nodetest.Start(t, yaml("node-a"))
	b := nodetest.Start(t, yaml("node-b"))
	ctx := context.Background()

	// An image of noise: PNG cannot shrink it, so it spans several parts.
	img := image.NewRGBA(image.Rect(0, 0, 400, 400))
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range img.Pix {
		img.Pix[i] = uint8(rnd.Uint32())
	}
	img.Set(0, 0, color.RGBA{1, 2, 3, 255})
	var file bytes.Buffer
	if err := png.Encode(&file, img); err != nil {
		t.Fatal(err)
	}
	if file.Len() < 2*256<<10 {
		t.Fatalf("test image is %d bytes, want several parts", file.Len())
	}

	vs, err := (&webtest.Client{Base: a.URL, Origin: origin}).StartSession(ctx, webtest.SessionRequest{Name: "Pat"})
	if err != nil {
		t.Fatal(err)
	}
	resp := do(t, "POST", a.URL+"/api/v1/visitor/uploads?name=noise.png", vs.Token, origin, nil, file.Bytes())
	if resp.status != http.StatusCreated {
		t.Fatalf("upload through node A: %d %s", resp.status, resp.body)
	}
	var up struct {
		Key, Name, Type, Preview string
		Size                     int64
	}
	if err := json.Unmarshal(resp.body, &up); err != nil {
		t.Fatal(err)
	}
	if up.Type != "image/png" || up.Size != int64(file.Len()) || up.Preview == "" {
		t.Fatalf("upload = %+v", up)
	}

	// The visitor downloads it, and its preview, through node B.
	got := do(t, "GET", b.URL+"/api/v1/visitor/media/"+up.Key, vs.Token, origin, nil, nil)
	if got.status != http.StatusOK || !bytes.Equal(got.body, file.Bytes()) {
		t.Fatalf("visitor download through node B: %d, %d bytes (want %d)", got.status, len(got.body), file.Len())
	}
	pre := do(t, "GET", b.URL+"/api/v1/visitor/media/"+up.Key+"?preview=1", vs.Token, origin, nil, nil)
	if pre.status != http.StatusOK || pre.header.Get("Content-Type") != "image/jpeg" || len(pre.body) == 0 {
		t.Fatalf("visitor preview through node B: %d %q", pre.status, pre.header.Get("Content-Type"))
	}

	// The visitor sends it through node B; an agent on node B fetches a
	// range across the first part boundary.
	sent, err := (&webtest.Poller{Client: &webtest.Client{Base: b.URL, Origin: origin}, Token: vs.Token}).Post(ctx,
		map[string]any{"type": "send", "id": "img-1", "kind": "image", "media": map[string]string{"key": up.Key}})
	if err != nil || len(sent) != 1 || sent[0].Type != "ack" {
		t.Fatalf("send through node B: %v, %+v", err, sent)
	}
	tok, err := (&webtest.Client{Base: b.URL}).Login(ctx, "alice@example.com", "alice-password")
	if err != nil {
		t.Fatal(err)
	}
	const from, to = 256<<10 - 100, 256<<10 + 99
	rng := do(t, "GET", b.URL+"/api/v1/media/"+up.Key, tok, "", http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", from, to)}}, nil)
	if rng.status != http.StatusPartialContent || !bytes.Equal(rng.body, file.Bytes()[from:to+1]) {
		t.Fatalf("agent range through node B: %d, %d bytes", rng.status, len(rng.body))
	}
	whole := do(t, "GET", a.URL+"/api/v1/media/"+up.Key, tok, "", nil, nil)
	if whole.status != http.StatusOK || !bytes.Equal(whole.body, file.Bytes()) {
		t.Fatalf("agent download through node A: %d, %d bytes", whole.status, len(whole.body))
	}

	for _, n := range []*nodetest.Node{a, b} {
		if files := filesUnder(t, n.Config.Media.Dir); len(files) > 0 {
			t.Errorf("%s wrote media to its folder: %v", n.Config.NodeID, files)
		}
	}
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, method, url, token, origin string, h http.Header, body []byte) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: data}
}

// filesUnder lists the regular files under dir (none when it is missing).
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if os.IsNotExist(err) {
			return filepath.SkipDir
		}
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, strings.TrimPrefix(p, dir))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
