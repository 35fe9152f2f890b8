package wechattest

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/kefuhq/kefu/channels/wechat/wxapi"
)

// Mode is how an Official Account's server configuration encrypts callbacks.
type Mode int

const (
	Plain      Mode = iota // 明文模式: the message as is
	Compatible             // 兼容模式: the message and its encryption side by side
	Safe                   // 安全模式: only the encrypted message
)

// Account builds callbacks the way WeChat's servers send them to the
// account's server URL.
type Account struct {
	AppID  string
	Token  string
	AESKey string // EncodingAESKey, for Compatible and Safe
	// OriginalID is the account's original id (gh_…), the ToUserName of
	// every callback.
	OriginalID string
	// Now is the clock the timestamp comes from (time.Now when nil).
	Now func() time.Time
}

func (a Account) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// cdata writes s as XML character data inside CDATA, as WeChat does.
func cdata(s string) string {
	var b bytes.Buffer
	b.WriteString("<![CDATA[")
	for {
		i := bytes.Index([]byte(s), []byte("]]>"))
		if i < 0 {
			break
		}
		b.WriteString(s[:i+2] + "]]><![CDATA[")
		s = s[i+2:]
	}
	b.WriteString(s)
	b.WriteString("]]>")
	return b.String()
}

func (a Account) head(openID, msgType string, createTime int64) string {
	return fmt.Sprintf("<ToUserName>%s</ToUserName><FromUserName>%s</FromUserName><CreateTime>%d</CreateTime><MsgType>%s</MsgType>",
		cdata(a.OriginalID), cdata(openID), createTime, cdata(msgType))
}

// Text is a text message's XML.
func (a Account) Text(openID, content string, msgID int64) []byte {
	return []byte(fmt.Sprintf("<xml>%s<Content>%s</Content><MsgId>%d</MsgId></xml>",
		a.head(openID, "text", a.now().Unix()), cdata(content), msgID))
}

// Image is an image message's XML.
func (a Account) Image(openID, mediaID, picURL string, msgID int64) []byte {
	return []byte(fmt.Sprintf("<xml>%s<PicUrl>%s</PicUrl><MediaId>%s</MediaId><MsgId>%d</MsgId></xml>",
		a.head(openID, "image", a.now().Unix()), cdata(picURL), cdata(mediaID), msgID))
}

// Voice is a voice message's XML; recognition is the speech-to-text result
// WeChat adds when the account has it enabled ("" for none).
func (a Account) Voice(openID, mediaID, format, recognition string, msgID int64) []byte {
	rec := ""
	if recognition != "" {
		rec = "<Recognition>" + cdata(recognition) + "</Recognition>"
	}
	return []byte(fmt.Sprintf("<xml>%s<MediaId>%s</MediaId><Format>%s</Format>%s<MsgId>%d</MsgId></xml>",
		a.head(openID, "voice", a.now().Unix()), cdata(mediaID), cdata(format), rec, msgID))
}

// Video is a video message's XML.
func (a Account) Video(openID, mediaID, thumbMediaID string, msgID int64) []byte {
	return []byte(fmt.Sprintf("<xml>%s<MediaId>%s</MediaId><ThumbMediaId>%s</ThumbMediaId><MsgId>%d</MsgId></xml>",
		a.head(openID, "video", a.now().Unix()), cdata(mediaID), cdata(thumbMediaID), msgID))
}

// Location is a location message's XML.
func (a Account) Location(openID string, x, y float64, scale int, label string, msgID int64) []byte {
	return []byte(fmt.Sprintf("<xml>%s<Location_X>%s</Location_X><Location_Y>%s</Location_Y><Scale>%d</Scale><Label>%s</Label><MsgId>%d</MsgId></xml>",
		a.head(openID, "location", a.now().Unix()), strconv.FormatFloat(x, 'f', -1, 64), strconv.FormatFloat(y, 'f', -1, 64), scale, cdata(label), msgID))
}

// Link is a link message's XML.
func (a Account) Link(openID, title, description, link string, msgID int64) []byte {
	return []byte(fmt.Sprintf("<xml>%s<Title>%s</Title><Description>%s</Description><Url>%s</Url><MsgId>%d</MsgId></xml>",
		a.head(openID, "link", a.now().Unix()), cdata(title), cdata(description), cdata(link), msgID))
}

// Event is an event's XML (subscribe, unsubscribe, CLICK, VIEW, SCAN…),
// created at createTime (WeChat's retries of an event repeat it).
func (a Account) Event(openID, event, eventKey string, createTime int64) []byte {
	key := ""
	if eventKey != "" {
		key = "<EventKey>" + cdata(eventKey) + "</EventKey>"
	}
	return []byte(fmt.Sprintf("<xml>%s<Event>%s</Event>%s</xml>", a.head(openID, "event", createTime), cdata(event), key))
}

// Request builds the POST WeChat makes to serverURL for the message XML
// msg in mode, signed with the account's token.
func (a Account) Request(serverURL string, mode Mode, msg []byte) (*http.Request, error) {
	ts := strconv.FormatInt(a.now().Unix(), 10)
	nonce := strconv.FormatInt(a.now().UnixNano()%1_000_000_007, 10)
	q := url.Values{}
	q.Set("signature", wxapi.Signature(a.Token, ts, nonce))
	q.Set("timestamp", ts)
	q.Set("nonce", nonce)
	var probe struct {
		From string `xml:"FromUserName"`
	}
	_ = xml.Unmarshal(msg, &probe)
	q.Set("openid", probe.From)
	body := msg
	if mode != Plain {
		enc, err := wxapi.Encrypt(a.AppID, msg, a.AESKey)
		if err != nil {
			return nil, err
		}
		q.Set("encrypt_type", "aes")
		q.Set("msg_signature", wxapi.Signature(a.Token, ts, nonce, enc))
		encElem := "<Encrypt>" + cdata(enc) + "</Encrypt>"
		if mode == Safe {
			body = []byte("<xml><ToUserName>" + cdata(a.OriginalID) + "</ToUserName>" + encElem + "</xml>")
		} else {
			i := bytes.LastIndex(msg, []byte("</xml>"))
			if i < 0 {
				return nil, fmt.Errorf("wechattest: message is not <xml>…</xml>")
			}
			body = append(append(append([]byte(nil), msg[:i]...), encElem...), msg[i:]...)
		}
	}
	req, err := http.NewRequest(http.MethodPost, serverURL+"?"+q.Encode(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "text/xml")
	return req, nil
}

// Post sends msg to serverURL in mode with client and returns the answer.
func (a Account) Post(client *http.Client, serverURL string, mode Mode, msg []byte) (*http.Response, error) {
	req, err := a.Request(serverURL, mode, msg)
	if err != nil {
		return nil, err
	}
	return client.Do(req)
}

// VerifyRequest builds the GET WeChat makes when the server configuration
// is saved: signature, timestamp, nonce and echostr.
func (a Account) VerifyRequest(serverURL, echostr string) (*http.Request, error) {
	ts := strconv.FormatInt(a.now().Unix(), 10)
	nonce := "739271"
	q := url.Values{}
	q.Set("signature", wxapi.Signature(a.Token, ts, nonce))
	q.Set("timestamp", ts)
	q.Set("nonce", nonce)
	q.Set("echostr", echostr)
	return http.NewRequest(http.MethodGet, serverURL+"?"+q.Encode(), nil)
}
