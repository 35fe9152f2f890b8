package whatsapp

// The WhatsApp Cloud API's wire format, as far as kefu reads and writes it.
// Decoding is lenient on purpose: Meta adds fields to its webhooks without
// notice, and an unknown field must never make kefu refuse (and Meta retry)
// a customer's message.

// Notification is the body of a webhook POST.
type Notification struct {
	Object string  `json:"object"` // "whatsapp_business_account"
	Entry  []Entry `json:"entry"`
}

// Entry is one WhatsApp Business Account's share of a notification.
type Entry struct {
	ID      string   `json:"id"` // the WABA id
	Changes []Change `json:"changes"`
}

// Change is one change of a subscribed field; kefu reads field "messages".
type Change struct {
	Field string `json:"field"`
	Value Value  `json:"value"`
}

// Value holds a "messages" change: customer messages with their senders'
// contacts, or statuses of messages the business sent, or errors.
type Value struct {
	MessagingProduct string       `json:"messaging_product"`
	Metadata         Metadata     `json:"metadata"`
	Contacts         []Contact    `json:"contacts,omitempty"`
	Messages         []InMessage  `json:"messages,omitempty"`
	Statuses         []Status     `json:"statuses,omitempty"`
	Errors           []EventError `json:"errors,omitempty"`
}

// Metadata names the business phone number the change is for.
type Metadata struct {
	DisplayPhoneNumber string `json:"display_phone_number"`
	PhoneNumberID      string `json:"phone_number_id"`
}

// Contact is a message sender as Meta describes them. WaID (the phone
// number) may be empty for a user with a username; UserID is the
// business-scoped user id (BSUID).
type Contact struct {
	Profile Profile `json:"profile"`
	WaID    string  `json:"wa_id,omitempty"`
	UserID  string  `json:"user_id,omitempty"`
}

// Profile is a sender's WhatsApp profile.
type Profile struct {
	Name     string `json:"name,omitempty"`
	Username string `json:"username,omitempty"`
}

// InMessage is one customer message. Exactly one of the content fields is
// set, as Type says.
type InMessage struct {
	From       string `json:"from,omitempty"`         // the sender's wa_id; may be empty
	FromUserID string `json:"from_user_id,omitempty"` // the sender's BSUID
	ID         string `json:"id"`                     // the wamid
	Timestamp  string `json:"timestamp,omitempty"`    // unix seconds
	Type       string `json:"type"`

	Text        *Text           `json:"text,omitempty"`
	Image       *MediaRef       `json:"image,omitempty"`
	Audio       *MediaRef       `json:"audio,omitempty"`
	Video       *MediaRef       `json:"video,omitempty"`
	Document    *MediaRef       `json:"document,omitempty"`
	Sticker     *MediaRef       `json:"sticker,omitempty"`
	Location    *Location       `json:"location,omitempty"`
	Contacts    []SharedCard    `json:"contacts,omitempty"`
	Interactive *Interactive    `json:"interactive,omitempty"`
	Button      *Button         `json:"button,omitempty"`
	Reaction    *Reaction       `json:"reaction,omitempty"`
	System      *System         `json:"system,omitempty"`
	Context     *MessageContext `json:"context,omitempty"`
	Errors      []EventError    `json:"errors,omitempty"`
}

// Text is a text message.
type Text struct {
	Body string `json:"body"`
}

// MediaRef is an image, audio, video, document or sticker: an id to fetch
// through the Graph media endpoint.
type MediaRef struct {
	ID       string `json:"id"`
	MimeType string `json:"mime_type,omitempty"`
	SHA256   string `json:"sha256,omitempty"`
	Caption  string `json:"caption,omitempty"`
	Filename string `json:"filename,omitempty"` // documents
	Voice    bool   `json:"voice,omitempty"`    // audio recorded in the app
	Animated bool   `json:"animated,omitempty"` // stickers
}

// Location is a shared location.
type Location struct {
	Latitude  float64 `json:"latitude"`
	Longitude float64 `json:"longitude"`
	Name      string  `json:"name,omitempty"`
	Address   string  `json:"address,omitempty"`
	URL       string  `json:"url,omitempty"`
}

// SharedCard is a contact card the customer shared.
type SharedCard struct {
	Name   CardName    `json:"name"`
	Phones []CardPhone `json:"phones,omitempty"`
	Emails []CardEmail `json:"emails,omitempty"`
	Org    *CardOrg    `json:"org,omitempty"`
}

// CardName is a shared contact's name.
type CardName struct {
	FormattedName string `json:"formatted_name,omitempty"`
	FirstName     string `json:"first_name,omitempty"`
	LastName      string `json:"last_name,omitempty"`
}

// CardPhone is a shared contact's phone number.
type CardPhone struct {
	Phone string `json:"phone,omitempty"`
	WaID  string `json:"wa_id,omitempty"`
	Type  string `json:"type,omitempty"`
}

// CardEmail is a shared contact's email address.
type CardEmail struct {
	Email string `json:"email,omitempty"`
	Type  string `json:"type,omitempty"`
}

// CardOrg is a shared contact's organisation.
type CardOrg struct {
	Company string `json:"company,omitempty"`
}

// Interactive is the customer's answer to an interactive message: a reply
// button, a list row, or a WhatsApp Flow.
type Interactive struct {
	Type        string     `json:"type"` // button_reply | list_reply | nfm_reply
	ButtonReply *ReplyPick `json:"button_reply,omitempty"`
	ListReply   *ReplyPick `json:"list_reply,omitempty"`
	NFMReply    *NFMReply  `json:"nfm_reply,omitempty"`
}

// ReplyPick is the button or list row the customer picked.
type ReplyPick struct {
	ID          string `json:"id"`
	Title       string `json:"title"`
	Description string `json:"description,omitempty"`
}

// NFMReply is a WhatsApp Flow's answer.
type NFMReply struct {
	Name         string `json:"name,omitempty"`
	Body         string `json:"body,omitempty"`
	ResponseJSON string `json:"response_json,omitempty"`
}

// Button is the customer's tap on a template's quick-reply button.
type Button struct {
	Text    string `json:"text"`
	Payload string `json:"payload,omitempty"`
}

// Reaction is an emoji reaction to a message; an empty Emoji removes one.
type Reaction struct {
	MessageID string `json:"message_id"`
	Emoji     string `json:"emoji"`
}

// System is a system message (the customer changed number…).
type System struct {
	Body    string `json:"body,omitempty"`
	Type    string `json:"type,omitempty"`
	NewWaID string `json:"new_wa_id,omitempty"`
}

// MessageContext says which message a message answers.
type MessageContext struct {
	From string `json:"from,omitempty"`
	ID   string `json:"id,omitempty"`
}

// Status is the delivery status of a message the business sent.
type Status struct {
	ID              string       `json:"id"`     // the wamid
	Status          string       `json:"status"` // sent | delivered | read | failed (| played …)
	Timestamp       string       `json:"timestamp,omitempty"`
	RecipientID     string       `json:"recipient_id,omitempty"`
	RecipientUserID string       `json:"recipient_user_id,omitempty"`
	Errors          []EventError `json:"errors,omitempty"`
}

// EventError is an error as webhooks carry it (failed statuses,
// unsupported messages).
type EventError struct {
	Code      int        `json:"code"`
	Title     string     `json:"title,omitempty"`
	Message   string     `json:"message,omitempty"`
	ErrorData *ErrorData `json:"error_data,omitempty"`
}

// ErrorData holds an error's details.
type ErrorData struct {
	Details string `json:"details,omitempty"`
}

// Graph API requests and answers.

// outMessage is the body of POST /{phone_number_id}/messages.
type outMessage struct {
	MessagingProduct string       `json:"messaging_product"`   // "whatsapp"
	RecipientType    string       `json:"recipient_type"`      // "individual"
	To               string       `json:"to,omitempty"`        // a wa_id (phone number)
	Recipient        string       `json:"recipient,omitempty"` // a BSUID, when there is no phone number
	Type             string       `json:"type"`
	Text             *outText     `json:"text,omitempty"`
	Image            *outMedia    `json:"image,omitempty"`
	Audio            *outMedia    `json:"audio,omitempty"`
	Video            *outMedia    `json:"video,omitempty"`
	Document         *outMedia    `json:"document,omitempty"`
	Template         *outTemplate `json:"template,omitempty"`
}

type outText struct {
	PreviewURL bool   `json:"preview_url"`
	Body       string `json:"body"`
}

type outMedia struct {
	ID       string `json:"id"`
	Caption  string `json:"caption,omitempty"`
	Filename string `json:"filename,omitempty"`
}

type outTemplate struct {
	Name       string         `json:"name"`
	Language   outLanguage    `json:"language"`
	Components []outComponent `json:"components,omitempty"`
}

type outLanguage struct {
	Code string `json:"code"`
}

type outComponent struct {
	Type       string         `json:"type"`
	SubType    string         `json:"sub_type,omitempty"`
	Index      string         `json:"index,omitempty"`
	Parameters []outParameter `json:"parameters,omitempty"`
}

type outParameter struct {
	Type          string   `json:"type"`
	ParameterName string   `json:"parameter_name,omitempty"`
	Text          string   `json:"text,omitempty"`
	Payload       string   `json:"payload,omitempty"`
	CouponCode    string   `json:"coupon_code,omitempty"`
	Image         *outLink `json:"image,omitempty"`
	Document      *outLink `json:"document,omitempty"`
	Video         *outLink `json:"video,omitempty"`
}

type outLink struct {
	Link string `json:"link"`
}

// sendAnswer is what POST /messages answers on success.
type sendAnswer struct {
	Messages []struct {
		ID string `json:"id"`
	} `json:"messages"`
}

// idAnswer is what POST /media answers on success.
type idAnswer struct {
	ID string `json:"id"`
}

// mediaInfo is what GET /{media_id} answers: where to download the media.
type mediaInfo struct {
	URL      string `json:"url"`
	MimeType string `json:"mime_type"`
	FileSize int64  `json:"file_size"`
	ID       string `json:"id"`
}

// graphErrorBody is the Graph API's error answer.
type graphErrorBody struct {
	Error struct {
		Message      string     `json:"message"`
		Type         string     `json:"type"`
		Code         int        `json:"code"`
		ErrorSubcode int        `json:"error_subcode"`
		ErrorData    *ErrorData `json:"error_data"`
		UserTitle    string     `json:"error_user_title"`
		UserMsg      string     `json:"error_user_msg"`
		FBTraceID    string     `json:"fbtrace_id"`
	} `json:"error"`
}
