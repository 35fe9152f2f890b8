package wecomtest

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/kefuhq/kefu/channels/wechat/wxapi"
)

// App builds the callbacks Work WeChat sends to an app's API callback URL:
// the member's message encrypted with the EncodingAESKey for the CorpID,
// signed with msg_signature.
type App struct {
	CorpID  string
	AgentID int64
	Token   string
	AESKey  string
	// Now is the clock of the timestamps (time.Now when nil).
	Now func() time.Time
}

var msgSerial atomic.Int64

func init() { msgSerial.Store(7_000_000_000_000_000_000) }

// NextMsgID returns a fresh MsgId (64-bit, as Work WeChat's are).
func NextMsgID() string { return strconv.FormatInt(msgSerial.Add(1), 10) }

func (a App) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

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
	b.WriteString(s + "]]>")
	return b.String()
}

// Text is member userid's text message to the app, with msgID ("" for a
// fresh one).
func (a App) Text(userid, content, msgID string) []byte {
	if msgID == "" {
		msgID = NextMsgID()
	}
	return []byte(fmt.Sprintf("<xml><ToUserName>%s</ToUserName><FromUserName>%s</FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[text]]></MsgType><Content>%s</Content><MsgId>%s</MsgId><AgentID>%d</AgentID></xml>",
		cdata(a.CorpID), cdata(userid), a.now().Unix(), cdata(content), msgID, a.AgentID))
}

// Image is member userid's image message to the app.
func (a App) Image(userid, mediaID, picURL, msgID string) []byte {
	if msgID == "" {
		msgID = NextMsgID()
	}
	return []byte(fmt.Sprintf("<xml><ToUserName>%s</ToUserName><FromUserName>%s</FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[image]]></MsgType><PicUrl>%s</PicUrl><MediaId>%s</MediaId><MsgId>%s</MsgId><AgentID>%d</AgentID></xml>",
		cdata(a.CorpID), cdata(userid), a.now().Unix(), cdata(picURL), cdata(mediaID), msgID, a.AgentID))
}

// Event is an app event (enter_agent, LOCATION…) from userid.
func (a App) Event(userid, event string) []byte {
	return []byte(fmt.Sprintf("<xml><ToUserName>%s</ToUserName><FromUserName>%s</FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[event]]></MsgType><Event>%s</Event><AgentID>%d</AgentID></xml>",
		cdata(a.CorpID), cdata(userid), a.now().Unix(), cdata(event), a.AgentID))
}

// Request builds the POST Work WeChat makes to callbackURL for msg.
func (a App) Request(callbackURL string, msg []byte) (*http.Request, error) {
	enc, err := wxapi.Encrypt(a.CorpID, msg, a.AESKey)
	if err != nil {
		return nil, err
	}
	ts := strconv.FormatInt(a.now().Unix(), 10)
	nonce := strconv.FormatInt(a.now().UnixNano()%1_000_000_007, 10)
	q := url.Values{}
	q.Set("msg_signature", wxapi.Signature(a.Token, ts, nonce, enc))
	q.Set("timestamp", ts)
	q.Set("nonce", nonce)
	body := fmt.Sprintf("<xml><ToUserName>%s</ToUserName><AgentID>%s</AgentID><Encrypt>%s</Encrypt></xml>",
		cdata(a.CorpID), cdata(strconv.FormatInt(a.AgentID, 10)), cdata(enc))
	req, err := http.NewRequest(http.MethodPost, callbackURL+"?"+q.Encode(), bytes.NewReader([]byte(body)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "text/xml")
	return req, nil
}

// Post sends msg to callbackURL with client.
func (a App) Post(client *http.Client, callbackURL string, msg []byte) (*http.Response, error) {
	req, err := a.Request(callbackURL, msg)
	if err != nil {
		return nil, err
	}
	return client.Do(req)
}

// VerifyRequest builds the GET Work WeChat makes when the API callback is
// saved: echo encrypted as echostr, signed.
func (a App) VerifyRequest(callbackURL, echo string) (*http.Request, error) {
	enc, err := wxapi.Encrypt(a.CorpID, []byte(echo), a.AESKey)
	if err != nil {
		return nil, err
	}
	ts := strconv.FormatInt(a.now().Unix(), 10)
	nonce := "1372623149"
	q := url.Values{}
	q.Set("msg_signature", wxapi.Signature(a.Token, ts, nonce, enc))
	q.Set("timestamp", ts)
	q.Set("nonce", nonce)
	q.Set("echostr", enc)
	return http.NewRequest(http.MethodGet, callbackURL+"?"+q.Encode(), nil)
}
