package whatsapp

import (
	"reflect"
	"strings"
	"testing"

	"github.com/kefuhq/kefu/config"
)

func parse(t *testing.T, yaml string) (*config.Config, error) {
	t.Helper()
	return config.Parse("test.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
}

func TestConfigDecodes(t *testing.T) {
	cfg, err := parse(t, `
channels:
  wa:
    type: whatsapp
    enabled: true
    phone_number_id: "106540352242922"
    access_token: EAAG-token
    app_secret: s3cret
    verify_token: verify-me
    templates:
      reopen:
        name: reopen_conversation
        language: en_US
        components:
          - type: header
            parameters: [{type: image, link: "https://shop.example.com/logo.png"}]
          - type: body
            parameters:
              - {type: text, text: "Acme support"}
              - {type: text, parameter_name: order, text: "your order"}
          - {type: button, sub_type: quick_reply, index: 0, parameters: [{type: payload, payload: REOPEN}]}
          - {type: button, sub_type: copy_code, index: 1, parameters: [{type: text, text: SAVE20}]}
`)
	if err != nil {
		t.Fatal(err)
	}
	got := *cfg.Channels["wa"].Config.(*Config)
	want := Config{
		PhoneNumberID: "106540352242922", AccessToken: "EAAG-token", AppSecret: "s3cret", VerifyToken: "verify-me",
		APIBase: DefaultAPIBase, APIVersion: DefaultAPIVersion,
		Templates: map[string]Template{"reopen": {Name: "reopen_conversation", Language: "en_US", Components: []Component{
			{Type: "header", Parameters: []Parameter{{Type: "image", Link: "https://shop.example.com/logo.png"}}},
			{Type: "body", Parameters: []Parameter{{Type: "text", Text: "Acme support"}, {Type: "text", Name: "order", Text: "your order"}}},
			{Type: "button", SubType: "quick_reply", Index: 0, Parameters: []Parameter{{Type: "payload", Payload: "REOPEN"}}},
			{Type: "button", SubType: "copy_code", Index: 1, Parameters: []Parameter{{Type: "text", Text: "SAVE20"}}},
		}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", got, want)
	}
	// The wire form of the template, as the messages endpoint takes it.
	wire := jsonString(t, got.Templates["reopen"].wire())
	wantWire := `{"name":"reopen_conversation","language":{"code":"en_US"},"components":[` +
		`{"type":"header","parameters":[{"type":"image","image":{"link":"https://shop.example.com/logo.png"}}]},` +
		`{"type":"body","parameters":[{"type":"text","text":"Acme support"},{"type":"text","parameter_name":"order","text":"your order"}]},` +
		`{"type":"button","sub_type":"quick_reply","index":"0","parameters":[{"type":"payload","payload":"REOPEN"}]},` +
		// A coupon's copy-code button takes its code as a coupon_code
		// parameter (Meta's "Sending coupon code templates").
		`{"type":"button","sub_type":"copy_code","index":"1","parameters":[{"type":"coupon_code","coupon_code":"SAVE20"}]}]}`
	if wire != wantWire {
		t.Fatalf("wire template\n%s\nwant\n%s", wire, wantWire)
	}
}

func TestConfigErrors(t *testing.T) {
	_, err := parse(t, `
channels:
  wa:
    type: whatsapp
    enabled: true
    phone_number_id: "+1 555 0100"
    api_base: "graph.facebook.com"
    api_version: "21"
    templates:
      reopen:
        name: Reopen Conversation
        components:
          - type: footer
          - type: button
            sub_type: call
            parameters: [{type: text}, {type: image, link: "http://insecure"}, {type: location}]
          - {type: button, sub_type: copy_code, index: 1, parameters: [{type: text, text: "SAVE 20%"}]}
`)
	if err == nil {
		t.Fatal("a broken section loaded")
	}
	for _, want := range []string{
		"channels.wa.access_token: required", "channels.wa.app_secret: required", "channels.wa.verify_token: required",
		"channels.wa.phone_number_id: must be the number's id", "channels.wa.api_base: must be an absolute",
		"channels.wa.api_version: must look like v21.0",
		"channels.wa.templates.reopen.name: required", "channels.wa.templates.reopen.language: required",
		"templates.reopen.components[0].type: must be header, body or button",
		"templates.reopen.components[1].sub_type: must be quick_reply, url or copy_code",
		"components[1].parameters[0].text: required", "components[1].parameters[1].link: required",
		"components[1].parameters[2].type: must be text, payload",
		"components[2].parameters[0].text: a copy_code button's coupon code has 1 to 15 letters and digits",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
	// A disabled instance may leave its secrets empty.
	if _, err := parse(t, "channels:\n  wa: {type: whatsapp, enabled: false}\n"); err != nil {
		t.Fatalf("disabled instance: %v", err)
	}
}
