// The kefu agent console: a client of the REST API (docs/api.md) and of the
// agent stream (docs/protocol.md). It keeps what it shows in one state
// object, S, fed by REST answers and live frames, and redraws from it.
//
// Safety: every piece of text that comes from the server (messages, names,
// file names, failure reasons) reaches the page through dom.js's h() or
// textContent, never as HTML; images come from blob: URLs of media fetched
// with the agent's token.

import { h, $, show, clear } from "./dom.js";
import * as api from "./api.js";
import { t, applyStatic, toggleLang, formatTime, formatSize } from "./i18n.js";
import { AgentStream } from "./stream.js";

const PAGE = 50; // messages per history page
const TYPING_SHOWN_MS = 6000; // a typing "on" expires after this
const TYPING_EVERY_MS = 3000; // how often an agent's typing is repeated
const TYPING_IDLE_MS = 4000; // typing stops after this long without a key
const WINDOW_WARN_MS = 60 * 60 * 1000; // warn this long before a window closes
const ZERO_TIME = "0001-01-01T00:00:00Z";

// Which conversations each filter shows: the REST query, and the same rule
// for conversations that change live.
const FILTERS = {
  mine: { query: "assignee=me&status=open,pending", match: (c) => c.assignee_id === S.me.id && c.status !== "resolved" },
  unassigned: { query: "assignee=none&status=open,pending", match: (c) => !c.assignee_id && c.status !== "resolved" },
  queued: { query: "status=pending", match: (c) => c.status === "pending" },
  open: { query: "status=open,pending", match: (c) => c.status !== "resolved" },
  resolved: { query: "status=resolved", match: (c) => c.status === "resolved" },
};

const STATUS_RANK = { pending: 0, sent: 1, delivered: 2, read: 3, failed: 4 };

let S = freshState();

function savedFilter() {
  try {
    const f = localStorage.getItem("kefu.console.filter");
    if (f && FILTERS[f]) return f;
  } catch (e) { /* storage disabled */ }
  return "mine";
}

function freshState() {
  return {
    me: null,
    agents: new Map(), // id → agent
    filter: savedFilter(),
    convs: new Map(), // id → conversation (see fromView)
    next: null, // paging cursor of the list
    fetching: new Map(), // id → promise of a conversation being loaded
    openId: 0,
    msgs: new Map(), // seq → message of the open conversation
    hasOlder: false,
    loadingOlder: false,
    templates: [],
    typing: null, // {text, until}
    stream: null,
    conn: "connecting",
    blobs: new Map(), // media path → promise of an object URL
    clientId: "", // the composer's pending client id (kept for retries)
    typingSentAt: 0,
    typingIdle: 0,
    readTimer: 0,
    delivered: new Map(), // conversation id → highest seq acknowledged as delivered
    statuses: new Map(), // message id → a status that came before its message
  };
}

// ---- conversations -------------------------------------------------------

function parseTime(s) {
  if (!s || s === ZERO_TIME) return null;
  const ms = Date.parse(s);
  return isNaN(ms) ? null : ms;
}

// fromView turns the REST conversation view into the console's model.
function fromView(v) {
  const inbound = parseTime(v.last_inbound_at);
  const ends = parseTime(v.window_ends);
  const prev = S.convs.get(v.id);
  return {
    id: v.id,
    number: v.number || "#" + v.id,
    status: v.status,
    channel: v.channel,
    contact_id: v.contact ? v.contact.id : 0,
    contact_name: v.contact ? v.contact.name : "",
    assignee_id: v.assignee ? v.assignee.id : 0,
    last_seq: v.last_seq,
    last_message: v.last_message,
    last_inbound_at: inbound,
    window_ends: ends,
    window_len: ends !== null && inbound !== null ? ends - inbound : (prev ? prev.window_len : null),
    unread: v.unread || 0,
    seen_id: v.last_message ? v.last_message.id : 0,
    last_contact_seq: prev ? prev.last_contact_seq : 0,
  };
}

function upsertView(v) {
  const c = fromView(v);
  const prev = S.convs.get(c.id);
  if (prev && prev.seen_id > c.seen_id) {
    // A frame newer than this answer was applied already: keep its news.
    c.last_message = prev.last_message;
    c.seen_id = prev.seen_id;
    c.unread = Math.max(c.unread, prev.unread);
  }
  S.convs.set(c.id, c);
  return c;
}

// applyStreamConv merges the conversation a frame carries (core's shape).
function applyStreamConv(sc) {
  const c = S.convs.get(sc.id);
  if (!c) return null;
  c.status = sc.status;
  c.assignee_id = sc.assignee_id || 0;
  c.last_seq = Math.max(c.last_seq, sc.last_seq || 0);
  const inbound = parseTime(sc.last_inbound_at);
  if (inbound !== null) {
    c.last_inbound_at = inbound;
    if (c.window_len !== null) c.window_ends = inbound + c.window_len;
  }
  return c;
}

// loadConversation fetches one conversation (once at a time per id).
function loadConversation(id) {
  if (S.fetching.has(id)) return S.fetching.get(id);
  const p = api.get("/conversations/" + id)
    .then((v) => upsertView(v))
    .catch((e) => { if (e.status !== 404) toastError(e); return null; })
    .finally(() => S.fetching.delete(id));
  S.fetching.set(id, p);
  return p;
}

async function loadList(reset) {
  const f = FILTERS[S.filter];
  let path = "/conversations?limit=50&" + f.query;
  if (!reset && S.next) path += "&before=" + S.next;
  const res = await api.get(path);
  let newest = 0;
  for (const v of res.conversations) {
    upsertView(v);
    if (v.last_message) newest = Math.max(newest, v.last_message.id);
  }
  S.next = res.next;
  if (S.stream) S.stream.hint(newest);
  renderList();
}

function contactName(c) {
  return c.contact_name || t("list.visitor", { id: c.contact_id });
}

function agentName(id) {
  if (!id) return t("common.someone");
  if (S.me && id === S.me.id) return S.me.name;
  const a = S.agents.get(id);
  if (!a) { refreshAgentsSoon(); return "#" + id; }
  return a.name;
}

let agentsTimer = 0;
function refreshAgentsSoon() {
  if (agentsTimer) return;
  agentsTimer = setTimeout(() => { agentsTimer = 0; loadAgents().catch(() => {}); }, 500);
}

async function loadAgents() {
  const res = await api.get("/agents");
  S.agents = new Map(res.agents.map((a) => [a.id, a]));
  const me = S.agents.get(S.me.id);
  if (me) S.me = { ...S.me, ...me };
  renderTop();
  renderConversation();
  renderAgentsPanel();
}

// ---- the list -------------------------------------------------------------

let listQueued = false;
function renderList() {
  if (listQueued) return;
  listQueued = true;
  requestAnimationFrame(() => { listQueued = false; drawList(); });
}

function previewText(m) {
  if (!m) return t("list.noMessages");
  let s;
  switch (m.kind) {
    case "image": s = t("list.image") + (m.text ? " " + m.text : ""); break;
    case "file": s = t("list.file") + (m.text ? " " + m.text : ""); break;
    case "template": s = t("list.template", { name: m.text || "" }); break;
    default: s = m.text || "";
  }
  return m.visibility === "internal" ? t("list.note", { text: s }) : s;
}

function drawList() {
  const list = $("conversation-list");
  clear(list);
  const f = FILTERS[S.filter];
  const shown = [...S.convs.values()].filter(f.match).sort((a, b) => b.id - a.id);
  for (const c of shown) {
    const lm = c.last_message;
    list.appendChild(h("li", {
      class: "conv-item" + (c.id === S.openId ? " active" : "") + (c.unread ? " has-unread" : ""),
      testid: "conversation-item", data: { conversationId: c.id, status: c.status },
      tabindex: "0", role: "button",
      onclick: () => openConversation(c.id),
      onkeydown: (e) => { if (e.key === "Enter") openConversation(c.id); },
    },
    h("div", { class: "row" },
      h("span", { class: "name", testid: "conversation-name", dir: "auto" }, contactName(c)),
      h("span", { class: "number muted" }, c.number),
      h("span", { class: "spacer" }),
      h("span", { class: "time muted" }, lm ? formatTime(lm.created_at) : "")),
    h("div", { class: "row" },
      h("span", { class: "preview" + (lm && lm.visibility === "internal" ? " note-text" : ""), testid: "conversation-preview", dir: "auto" }, previewText(lm)),
      h("span", { class: "spacer" }),
      c.unread ? h("span", { class: "badge", testid: "unread-badge" }, c.unread >= 100 ? "99+" : String(c.unread)) : null),
    h("div", { class: "row muted small" },
      c.channel + " · " + t("status." + c.status) + " · " +
      (c.assignee_id ? agentName(c.assignee_id) : t("list.unassigned")))));
  }
  show($("list-empty"), shown.length === 0);
  show($("list-more"), !!S.next);
  for (const b of document.querySelectorAll(".filters button")) b.classList.toggle("active", b.dataset.filter === S.filter);
  let unread = 0;
  for (const c of S.convs.values()) if (c.status !== "resolved") unread += c.unread;
  document.title = (unread ? "(" + unread + ") " : "") + "kefu";
}

async function setFilter(name) {
  if (!FILTERS[name]) return;
  S.filter = name;
  S.next = null;
  try { localStorage.setItem("kefu.console.filter", name); } catch (e) { /* storage disabled */ }
  renderList();
  try { await loadList(true); } catch (e) { toastError(e); }
}

// ---- one conversation ------------------------------------------------------

// linkedConversation is the conversation the page's address names,
// #/conversations/{id} (the link a Slack thread carries), or 0.
function linkedConversation() {
  const m = /^#\/conversations\/([1-9]\d{0,17})$/.exec(location.hash);
  return m ? Number(m[1]) : 0;
}

async function openConversation(id) {
  if (location.hash !== "#/conversations/" + id) {
    // The address names the open conversation: a reload keeps it, and
    // it can be copied as a link.
    history.replaceState(null, "", "#/conversations/" + id);
  }
  if (S.openId !== id) {
    stopTyping(); // "typing" ends in the conversation being left, not the next one
    S.openId = id;
    S.msgs = new Map();
    S.statuses = new Map();
    S.hasOlder = false;
    S.templates = [];
    S.typing = null;
    S.clientId = "";
    $("composer-input").value = "";
    // A choice made for the last conversation is not this one's.
    $("assign-select").value = "";
    $("transfer-select").value = "";
  }
  renderList();
  renderConversation();
  try {
    const [v, page] = await Promise.all([
      api.get("/conversations/" + id),
      api.get("/conversations/" + id + "/messages?limit=" + PAGE),
    ]);
    if (S.openId !== id) return;
    upsertView(v);
    for (const m of page.messages) mergeMessage(m);
    S.hasOlder = page.has_more;
    renderConversation({ toBottom: true });
    renderList();
    markReadSoon();
    const c = S.convs.get(id);
    if (c && c.window_ends !== null) {
      const res = await api.get("/conversations/" + id + "/templates");
      if (S.openId === id) { S.templates = res.templates || []; renderWindow(); }
    }
  } catch (e) {
    toastError(e);
  }
}

function mergeMessage(m) {
  const old = S.msgs.get(m.seq);
  // A status frame may beat the answer that carried the message: statuses
  // only move forward.
  const later = old && old.id === m.id ? old : S.statuses.get(m.id);
  if (later && STATUS_RANK[later.status] > STATUS_RANK[m.status]) {
    m.status = later.status;
    m.fail_reason = later.fail_reason || m.fail_reason;
  }
  S.msgs.set(m.seq, m);
}

async function loadOlder() {
  if (S.loadingOlder || !S.openId) return;
  const seqs = [...S.msgs.keys()];
  if (!seqs.length) return;
  const id = S.openId;
  S.loadingOlder = true;
  try {
    const page = await api.get("/conversations/" + id + "/messages?limit=" + PAGE + "&before_seq=" + Math.min(...seqs));
    if (S.openId !== id) return;
    for (const m of page.messages) mergeMessage(m);
    S.hasOlder = page.has_more;
    renderConversation({ keepFromBottom: true });
  } catch (e) {
    toastError(e);
  } finally {
    S.loadingOlder = false;
  }
}

// markReadSoon tells the server (once things settle) that the agents have
// read the open conversation, when the agent can see it.
function markReadSoon() {
  clearTimeout(S.readTimer);
  S.readTimer = setTimeout(() => {
    const c = S.convs.get(S.openId);
    if (!c || document.visibilityState !== "visible") return;
    if (!c.unread && !hasUnreadContact(c)) return;
    const seq = c.last_seq;
    c.unread = 0;
    renderList();
    if (seq > 0) api.post("/conversations/" + c.id + "/read", { seq }).catch(() => {});
  }, 300);
}

function hasUnreadContact(c) {
  for (const m of S.msgs.values()) if (m.sender_kind === "contact" && m.status !== "read" && m.conversation_id === c.id) return true;
  return false;
}

function renderConversation(opts) {
  const c = S.convs.get(S.openId);
  show($("conversation"), !!c);
  show($("placeholder"), !c);
  if (!c) return;
  $("conv-title").textContent = contactName(c);
  $("conv-title").title = contactName(c); // cut to the width; the whole name on hover
  $("conv-meta").textContent = t("conv.meta", {
    number: c.number, channel: c.channel, status: t("status." + c.status),
    assignee: c.assignee_id ? t("conv.assignedTo", { name: agentName(c.assignee_id) }) : t("list.unassigned"),
  });
  renderActions(c);
  renderWindow();
  renderMessages(opts || {});
  renderTyping();
  const note = document.querySelector('input[name="mode"][value="note"]').checked;
  $("composer-input").placeholder = t(note ? "composer.placeholderNote" : "composer.placeholderReply");
  $("composer").classList.toggle("note-mode", note);
}

function renderActions(c) {
  const admin = S.me.role === "admin";
  const resolved = c.status === "resolved";
  show($("act-take"), !resolved && !c.assignee_id);
  show($("assign-box"), admin && !resolved);
  show($("transfer-box"), !resolved && !!c.assignee_id && (admin || c.assignee_id === S.me.id));
  show($("act-close"), !resolved);
  show($("act-reopen"), resolved);
  const active = [...S.agents.values()].filter((a) => a.active);
  fillSelect($("assign-select"), [{ value: "", label: t("act.pickAgent") }]
    .concat(active.filter((a) => a.id !== c.assignee_id).map((a) => ({ value: a.id, label: a.name }))));
  fillSelect($("transfer-select"), [{ value: "", label: t("act.pickAgent") }, { value: "0", label: t("act.toQueue") }]
    .concat(active.filter((a) => a.id !== c.assignee_id).map((a) => ({ value: a.id, label: a.name }))));
}

function fillSelect(sel, options) {
  const keep = sel.value;
  clear(sel);
  for (const o of options) sel.appendChild(h("option", { value: String(o.value) }, o.label));
  if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
}

function renderWindow() {
  const c = S.convs.get(S.openId);
  const box = $("window-warning");
  if (!c || c.window_ends === null) {
    show(box, false);
    return;
  }
  const now = Date.now();
  const when = formatTime(new Date(c.window_ends).toISOString(), true);
  if (now >= c.window_ends) {
    const hasTemplates = S.templates.length > 0;
    $("window-text").textContent = t(hasTemplates ? "window.closed" : "window.closedNoTemplate", { channel: c.channel, when });
    fillSelect($("template-select"), S.templates.map((n) => ({ value: n, label: n })));
    show($("template-box"), hasTemplates);
    box.classList.add("closed");
    show(box, true);
  } else if (c.window_ends - now < WINDOW_WARN_MS) {
    $("window-text").textContent = t("window.closing", { when, min: Math.max(1, Math.round((c.window_ends - now) / 60000)) });
    show($("template-box"), false);
    box.classList.remove("closed");
    show(box, true);
  } else {
    show(box, false);
  }
}

function senderLabel(m, c) {
  switch (m.sender_kind) {
    case "contact": return c ? contactName(c) : t("msg.customer");
    case "agent": return agentName(m.sender_id);
    case "bot": return t("msg.bot");
    default: return "";
  }
}

function eventText(ev, text) {
  const agent = agentName(ev.agent_id), by = agentName(ev.by_id);
  switch (ev.type) {
    case "delivery_failed":
      return ev.agent_id ? t("ev.deliveryFailed", { agent, reason: text || "" }) : t("ev.deliveryFailedBot", { reason: text || "" });
    case "assigned":
      if (!ev.by_id) return t("ev.assigned", { agent });
      if (ev.by_id === ev.agent_id) return t("ev.took", { agent });
      return t("ev.assignedBy", { by, agent });
    case "transferred": return t("ev.transferred", { from: agentName(ev.from_id), agent });
    case "unassigned": return t("ev.unassigned");
    case "resolved": return ev.by_id ? t("ev.resolved", { by }) : t("ev.resolvedAuto");
    case "reopened": return ev.by_id ? t("ev.reopened", { by }) : t("ev.reopenedByCustomer");
  }
  return ev.type;
}

function renderMessages(opts) {
  const box = $("messages");
  const items = $("message-items");
  const fromBottom = box.scrollHeight - box.scrollTop;
  const atBottom = fromBottom - box.clientHeight < 40;
  const c = S.convs.get(S.openId);
  clear(items);
  const seqs = [...S.msgs.keys()].sort((a, b) => a - b);
  for (const seq of seqs) items.appendChild(messageEl(S.msgs.get(seq), c));
  show($("load-older"), S.hasOlder);
  if (opts.keepFromBottom) box.scrollTop = box.scrollHeight - fromBottom;
  else if (opts.toBottom || atBottom) box.scrollTop = box.scrollHeight;
}

function messageEl(m, c) {
  const data = { messageId: m.id, seq: m.seq, kind: m.kind, sender: m.sender_kind, visibility: m.visibility };
  if (m.kind === "event") {
    return h("div", { class: "msg event", testid: "message", data },
      h("span", { testid: "message-event" }, eventText(m.event || {}, m.text) + " · " + formatTime(m.created_at)));
  }
  const note = m.visibility === "internal";
  const mine = m.sender_kind !== "contact";
  const cls = "msg " + (mine ? "out" : "in") + (note ? " note" : "") + (m.sender_kind === "bot" ? " bot" : "");
  const meta = h("div", { class: "meta" },
    note ? h("span", { class: "note-label", testid: "note-label" }, t("msg.note")) : null,
    h("span", { class: "who" }, senderLabel(m, c)),
    h("span", { class: "muted" }, formatTime(m.created_at)));
  const body = h("div", { class: "bubble" });
  if (m.kind === "image" || m.kind === "file") body.appendChild(mediaEl(m));
  if (m.kind === "template") body.appendChild(h("p", { class: "template", testid: "message-text" }, t("msg.template", { name: m.text || "" })));
  else if (m.text) body.appendChild(h("p", { class: "text", testid: "message-text", dir: "auto" }, m.text));
  const el = h("div", { class: cls, testid: "message", data }, meta, body);
  if (mine && !note) el.appendChild(statusEl(m));
  return el;
}

function statusEl(m) {
  const row = h("div", { class: "status status-" + m.status, testid: "message-status", data: { status: m.status } },
    t("msg.status." + m.status));
  if (m.status === "failed") {
    row.appendChild(h("span", { class: "fail", testid: "message-fail-reason" }, " " + t("msg.failed", { reason: m.fail_reason || "?" })));
    row.appendChild(h("button", { type: "button", class: "link", testid: "resend", onclick: () => resend(m) }, t("msg.resend")));
  }
  return row;
}

function mediaEl(m) {
  const md = m.media || {};
  const name = md.name || md.key || "";
  if (m.kind === "image" && md.preview) {
    const img = h("img", { alt: name, testid: "message-image", data: { key: md.key } });
    blobURL("/media/" + encodeURIComponent(md.key) + "/preview").then((u) => { img.src = u; }).catch(() => {});
    return h("button", { type: "button", class: "thumb", title: name, onclick: () => openLightbox(md) }, img);
  }
  return h("div", { class: "file", testid: "message-file", data: { key: md.key || "" } },
    h("span", { class: "file-name" }, name),
    h("span", { class: "muted" }, " " + (md.size ? formatSize(md.size) : "")),
    h("button", { type: "button", class: "link", testid: "message-download", onclick: () => download(md) }, t("msg.download")));
}

// blobURL fetches a media path with the agent's token, once, and answers
// an object URL for it.
function blobURL(path) {
  if (!S.blobs.has(path)) {
    const p = api.blob(path).then((b) => URL.createObjectURL(b));
    p.catch(() => S.blobs.delete(path));
    S.blobs.set(path, p);
  }
  return S.blobs.get(path);
}

async function openLightbox(md) {
  try {
    $("lightbox-img").src = await blobURL("/media/" + encodeURIComponent(md.key));
    $("lightbox-img").alt = md.name || "";
    show($("lightbox"), true);
  } catch (e) { toastError(e); }
}

async function download(md) {
  try {
    const u = await blobURL("/media/" + encodeURIComponent(md.key));
    const a = h("a", { href: u, download: md.name || md.key });
    document.body.appendChild(a);
    a.click();
    a.remove();
  } catch (e) { toastError(e); }
}

function renderTyping() {
  const on = S.typing && S.typing.until > Date.now();
  $("typing").textContent = on ? S.typing.text : "";
  show($("typing"), !!on);
}

// ---- live frames ------------------------------------------------------------

function onFrame(f) {
  switch (f.type) {
    case "message": onMessageFrame(f); break;
    case "conversation":
      if (f.conversation && applyStreamConv(f.conversation)) { renderList(); if (f.conversation.id === S.openId) renderConversation(); }
      break;
    case "status": onStatusFrame(f); break;
    case "receipt": onReceiptFrame(f); break;
    case "typing": onTypingFrame(f); break;
    case "error": if (f.error) toast(t("error.generic", { message: f.error.message || f.error.code })); break;
  }
}

async function onMessageFrame(f) {
  const m = f.message;
  if (!m) return;
  let c = S.convs.get(m.conversation_id);
  if (!c) {
    // A conversation new to this console: its view holds what was
    // committed before it was read (seen_id), so nothing counts twice.
    c = await loadConversation(m.conversation_id);
    if (!c) return;
  } else if (f.conversation) {
    applyStreamConv(f.conversation);
  }
  c.last_seq = Math.max(c.last_seq, m.seq);
  if (m.kind !== "event" && m.id > c.seen_id) {
    c.last_message = m;
    c.seen_id = m.id;
    if (m.sender_kind === "contact") c.unread += 1;
    else if (m.sender_kind === "agent" && m.visibility === "public") c.unread = 0; // answered (as the API counts; an automatic reply is not)
  }
  if (m.sender_kind === "contact") {
    c.last_contact_seq = Math.max(c.last_contact_seq, m.seq);
    if (m.conversation_id === S.openId && document.visibilityState === "visible") markReadSoon();
    else ackDelivered(c.id, m.seq);
  }
  if (m.conversation_id === S.openId) {
    const isNew = !S.msgs.has(m.seq);
    mergeMessage(m);
    if (S.typing && m.sender_kind === "contact") S.typing = null;
    renderConversation();
    // The message list is redrawn on every update, so it is no live
    // region: a screen reader hears each new message once, from here.
    if (isNew && !(m.sender_kind === "agent" && m.sender_id === S.me.id)) {
      $("announcer").textContent = m.kind === "event" ? eventText(m.event || {}, m.text)
        : senderLabel(m, c) + ": " + previewText(m);
    }
  }
  renderList();
}

// ackDelivered tells the customer's side that the agents have the message
// (delivered), once per conversation and sequence number.
function ackDelivered(convID, seq) {
  if ((S.delivered.get(convID) || 0) >= seq) return;
  S.delivered.set(convID, seq);
  S.stream.send({ type: "receipt", conversation_id: convID, seq, status: "delivered" });
}

function onStatusFrame(f) {
  if (f.conversation_id !== S.openId) return;
  const m = S.msgs.get(f.seq);
  if (!m || m.id !== f.message_id) {
    // The message itself is still on its way (the answer to its send).
    S.statuses.set(f.message_id, { status: f.status, fail_reason: f.fail_reason });
    return;
  }
  m.status = f.status;
  if (f.fail_reason) m.fail_reason = f.fail_reason;
  renderMessages({});
}

function onReceiptFrame(f) {
  const c = S.convs.get(f.conversation_id);
  if (f.by === "agent") {
    if (c && f.status === "read" && f.seq >= c.last_contact_seq) { c.unread = 0; renderList(); }
    if (f.conversation_id === S.openId) {
      for (const m of S.msgs.values()) if (m.sender_kind === "contact" && m.seq <= f.seq && STATUS_RANK[m.status] < STATUS_RANK[f.status]) m.status = f.status;
    }
    return;
  }
  if (f.conversation_id !== S.openId) return;
  let changed = false;
  for (const m of S.msgs.values()) {
    if (m.sender_kind !== "contact" && m.visibility === "public" && m.kind !== "event" && m.seq <= f.seq &&
        m.status !== "failed" && STATUS_RANK[m.status] < STATUS_RANK[f.status]) {
      m.status = f.status;
      changed = true;
    }
  }
  if (changed) renderMessages({});
}

let typingTimer = 0;
function onTypingFrame(f) {
  if (f.conversation_id !== S.openId) return;
  if (f.sender_kind === "agent" && f.sender_id === S.me.id) return;
  if (!f.on) { S.typing = null; renderTyping(); return; }
  S.typing = {
    text: f.sender_kind === "contact" ? t("typing.customer") : t("typing.agent", { name: f.sender_name || agentName(f.sender_id) }),
    until: Date.now() + TYPING_SHOWN_MS,
  };
  renderTyping();
  clearTimeout(typingTimer);
  typingTimer = setTimeout(renderTyping, TYPING_SHOWN_MS + 50);
}

// ---- agent actions ------------------------------------------------------------

async function act(path, body) {
  const id = S.openId;
  try {
    const v = await api.post("/conversations/" + id + path, body);
    upsertView(v);
    renderList();
    renderConversation();
  } catch (e) { toastError(e); }
}

function selectedAgent(sel) {
  if (sel.value === "") return null;
  return parseInt(sel.value, 10);
}

async function sendComposer() {
  const input = $("composer-input");
  const text = input.value.trim();
  const id = S.openId;
  if (!text || !id) return;
  const note = document.querySelector('input[name="mode"][value="note"]').checked;
  if (!S.clientId) S.clientId = api.clientID();
  const btn = document.querySelector('[data-testid="composer-send"]');
  btn.disabled = true;
  stopTyping();
  try {
    const m = await api.post("/conversations/" + id + (note ? "/notes" : "/messages"), { client_id: S.clientId, text });
    S.clientId = "";
    if (input.value.trim() === text) input.value = "";
    if (S.openId === id) { mergeMessage(m); renderConversation({ toBottom: true }); }
  } catch (e) {
    toastError(e);
  } finally {
    btn.disabled = false;
    input.focus();
  }
}

async function sendFile(file) {
  const id = S.openId;
  if (!id || !file) return;
  const note = document.querySelector('input[name="mode"][value="note"]').checked;
  const tst = toast(t("composer.uploading", { name: file.name }), "info", 0);
  try {
    const fd = new FormData();
    fd.append("file", file, file.name);
    const md = await api.request("POST", "/uploads", fd);
    const kind = md.type.startsWith("image/") && md.preview ? "image" : "file";
    const m = await api.post("/conversations/" + id + (note ? "/notes" : "/messages"),
      { client_id: api.clientID(), kind, media: { key: md.key, name: md.name } });
    if (S.openId === id) { mergeMessage(m); renderConversation({ toBottom: true }); }
  } catch (e) {
    toastError(e);
  } finally {
    tst.remove();
  }
}

async function resend(m) {
  try {
    const n = await api.post("/messages/" + m.id + "/resend");
    if (n.conversation_id === S.openId) { mergeMessage(n); renderConversation({ toBottom: true }); }
  } catch (e) { toastError(e); }
}

async function sendTemplate() {
  const name = $("template-select").value;
  if (!name || !S.openId) return;
  const id = S.openId;
  try {
    const m = await api.post("/conversations/" + id + "/messages", { client_id: api.clientID(), kind: "template", template: name });
    if (S.openId === id) { mergeMessage(m); renderConversation({ toBottom: true }); }
  } catch (e) { toastError(e); }
}

function onComposerInput() {
  const note = document.querySelector('input[name="mode"][value="note"]').checked;
  if (note || !S.openId || !S.stream) return; // notes are not the customer's business
  const now = Date.now();
  if (now - S.typingSentAt > TYPING_EVERY_MS) {
    S.typingSentAt = now;
    S.stream.send({ type: "typing", conversation_id: S.openId, on: true });
  }
  clearTimeout(S.typingIdle);
  S.typingIdle = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function stopTyping() {
  clearTimeout(S.typingIdle);
  if (S.typingSentAt && S.openId && S.stream) S.stream.send({ type: "typing", conversation_id: S.openId, on: false });
  S.typingSentAt = 0;
}

// ---- me, agents ---------------------------------------------------------------

function renderTop() {
  if (!S.me) return;
  $("me-name").textContent = S.me.name;
  const b = $("availability");
  const av = S.me.availability || "offline";
  b.textContent = t("avail." + av);
  b.title = t(av === "away" ? "avail.titleAway" : "avail.titleAvailable");
  b.dataset.availability = av;
  b.className = "pill avail-" + av;
  show($("agents-button"), S.me.role === "admin");
  const conn = { connecting: "conn.connecting", live: "conn.live", polling: "conn.polling", offline: "conn.offline" }[S.conn];
  $("conn-state").textContent = conn ? t(conn) : "";
  $("conn-state").dataset.state = S.conn;
}

async function toggleAvailability() {
  try {
    const me = await api.patch("/me", { away: S.me.availability !== "away" });
    S.me = { ...S.me, ...me };
    renderTop();
  } catch (e) { toastError(e); }
}

function renderAgentsPanel() {
  const rows = $("agents-rows");
  if ($("agents-panel").hidden) return;
  clear(rows);
  for (const a of [...S.agents.values()].sort((x, y) => x.id - y.id)) {
    const reset = h("form", { class: "inline reset", hidden: true, onsubmit: (e) => { e.preventDefault(); resetPassword(a, e.target); } },
      h("input", { name: "password", type: "password", minlength: "8", required: true, autocomplete: "new-password", placeholder: t("agents.newPassword") }),
      h("button", { type: "submit" }, t("agents.set")));
    const links = h("form", { class: "inline links", hidden: true, onsubmit: (e) => { e.preventDefault(); saveLinks(a, e.target); } },
      h("input", { name: "wecom_userid", value: a.wecom_userid || "", maxlength: "64", testid: "agent-link-wecom", placeholder: t("agents.wecomUserID") }),
      h("input", { name: "slack_user", value: a.slack_user || "", maxlength: "32", testid: "agent-link-slack", placeholder: t("agents.slackUser") }),
      h("button", { type: "submit", testid: "agent-link-save" }, t("agents.save")));
    const linked = [a.wecom_userid && t("agents.viaWecom", { id: a.wecom_userid }), a.slack_user && t("agents.viaSlack", { id: a.slack_user })]
      .filter(Boolean).join(" · ");
    rows.appendChild(h("tr", { testid: "agent-row", data: { agentId: a.id }, class: a.active ? "" : "inactive" },
      h("td", {}, a.name),
      h("td", {}, a.email || ""),
      h("td", {}, t("role." + a.role)),
      h("td", {}, a.active ? t("avail." + a.availability) : t("agents.inactive")),
      h("td", { testid: "agent-links" }, linked || "—"),
      h("td", { class: "agent-actions" },
        h("button", { type: "button", class: "link", testid: a.active ? "agent-deactivate" : "agent-activate",
          onclick: () => setActive(a, !a.active) }, t(a.active ? "agents.deactivate" : "agents.activate")),
        h("button", { type: "button", class: "link", testid: "agent-reset",
          onclick: () => { reset.hidden = !reset.hidden; } }, t("agents.resetPassword")),
        h("button", { type: "button", class: "link", testid: "agent-link",
          onclick: () => { links.hidden = !links.hidden; } }, t("agents.link")),
        reset, links)));
  }
}

async function setActive(a, active) {
  try {
    const v = await api.patch("/agents/" + a.id, { active });
    S.agents.set(v.id, v);
    renderAgentsPanel();
  } catch (e) { toastError(e); }
}

// saveLinks sets the Work WeChat and Slack ids an agent answers from
// (empty: not linked).
async function saveLinks(a, form) {
  try {
    const v = await api.patch("/agents/" + a.id, { wecom_userid: form.wecom_userid.value.trim(), slack_user: form.slack_user.value.trim() });
    S.agents.set(v.id, v);
    toast(t("agents.linksSaved", { name: v.name }), "info");
    renderAgentsPanel();
  } catch (e) { toastError(e); }
}

async function resetPassword(a, form) {
  try {
    await api.post("/agents/" + a.id + "/password", { password: form.password.value });
    toast(t("agents.passwordReset", { name: a.name }), "info");
    form.reset();
    form.hidden = true;
  } catch (e) { toastError(e); }
}

async function createAgent(form) {
  try {
    const v = await api.post("/agents", {
      name: form.name.value.trim(), email: form.email.value.trim(), role: form.role.value, password: form.password.value,
    });
    S.agents.set(v.id, v);
    form.reset();
    toast(t("agents.created", { name: v.name }), "info");
    renderAgentsPanel();
  } catch (e) { toastError(e); }
}

// ---- toasts ----------------------------------------------------------------------

function toast(text, kind, ms) {
  const el = h("div", { class: "toast " + (kind || "error"), testid: "toast", role: "status" }, text);
  $("toasts").appendChild(el);
  if (ms !== 0) setTimeout(() => el.remove(), ms || 6000);
  return el;
}

function toastError(e) {
  if (e && e.status === 401) return; // back to the login screen
  if (e && e.code === "network") { toast(t("error.network")); return; }
  if (e && e.status === 413) { toast(t("error.tooLarge")); return; }
  if (e && e.status === 415 && e.code === "unsupported_media_type") { toast(t("error.type") + " " + (e.message || "")); return; }
  toast(t("error.generic", { message: (e && e.message) || String(e) }));
}

// ---- start, login, logout ------------------------------------------------------------

function showLogin(message) {
  show($("app"), false);
  show($("login"), true);
  applyStatic(document);
  const err = $("login-error");
  err.textContent = message || "";
  show(err, !!message);
  $("login-email").focus();
}

async function startApp(me) {
  if (S.me) return; // already started (a login and a boot retry at once)
  S = freshState();
  S.me = me;
  // Opened from a link: that conversation, once the stream is up.
  S.openId = linkedConversation();
  show($("login"), false);
  show($("app"), true);
  applyStatic(document);
  renderTop();
  renderConversation();
  renderList();
  loadAgents().catch(toastError);
  S.stream = new AgentStream(api.getToken(), {
    onFrame,
    onSynced: async () => {
      // The first time: the list; after a reconnect: whatever may have
      // changed without a message (statuses), and our availability.
      try {
        await loadList(true);
        if (S.openId) await openConversation(S.openId);
        const fresh = await api.get("/me");
        S.me = { ...S.me, ...fresh };
        renderTop();
      } catch (e) { toastError(e); }
    },
    onState: (s) => { S.conn = s; renderTop(); },
    onUnauthorized: () => logout(true),
  });
  S.stream.start();
}

function stopApp() {
  if (S.stream) S.stream.stop();
  for (const p of S.blobs.values()) p.then((u) => URL.revokeObjectURL(u)).catch(() => {});
  S = freshState();
}

async function logout(expired) {
  if (!expired) { try { await api.post("/auth/logout"); } catch (e) { /* gone anyway */ } }
  api.setToken("");
  stopApp();
  clear($("conversation-list"));
  clear($("message-items"));
  showLogin();
}

async function onLogin(e) {
  e.preventDefault();
  const email = $("login-email").value.trim(), password = $("login-password").value;
  try {
    const res = await api.login(email, password);
    $("login-password").value = "";
    startApp(res.agent);
  } catch (err) {
    if (err.status === 429) showLogin(t("login.throttled", { s: err.retryAfter || 60 }));
    else if (err.status === 401) showLogin(t("login.wrong"));
    else showLogin(t("error.generic", { message: err.message }));
  }
}

function wire() {
  $("login-form").addEventListener("submit", onLogin);
  for (const b of document.querySelectorAll(".lang-toggle")) {
    b.addEventListener("click", () => {
      toggleLang();
      applyStatic(document);
      if (S.me) { renderTop(); renderList(); renderConversation(); renderAgentsPanel(); }
    });
  }
  $("logout").addEventListener("click", () => logout(false));
  $("availability").addEventListener("click", toggleAvailability);
  for (const b of document.querySelectorAll(".filters button")) b.addEventListener("click", () => setFilter(b.dataset.filter));
  $("list-more").addEventListener("click", () => loadList(false).catch(toastError));
  $("load-older").addEventListener("click", loadOlder);
  $("messages").addEventListener("scroll", () => { if ($("messages").scrollTop < 40 && S.hasOlder) loadOlder(); });
  $("act-take").addEventListener("click", () => act("/take"));
  $("act-close").addEventListener("click", () => act("/close"));
  $("act-reopen").addEventListener("click", () => act("/reopen"));
  $("act-assign").addEventListener("click", () => {
    const a = selectedAgent($("assign-select"));
    if (a) act("/assign", { agent_id: a });
  });
  $("act-transfer").addEventListener("click", () => {
    const a = selectedAgent($("transfer-select"));
    if (a !== null) act("/transfer", { agent_id: a });
  });
  $("template-send").addEventListener("click", sendTemplate);
  $("composer").addEventListener("submit", (e) => { e.preventDefault(); sendComposer(); });
  $("composer-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); sendComposer(); }
  });
  $("composer-input").addEventListener("input", () => { S.clientId = ""; onComposerInput(); });
  for (const r of document.querySelectorAll('input[name="mode"]')) r.addEventListener("change", () => { stopTyping(); renderConversation(); });
  $("composer-file").addEventListener("change", (e) => {
    const files = [...e.target.files];
    e.target.value = "";
    (async () => { for (const f of files) await sendFile(f); })();
  });
  $("agents-button").addEventListener("click", () => {
    show($("agents-panel"), true);
    renderAgentsPanel();
    loadAgents().catch(toastError);
  });
  $("agents-close").addEventListener("click", () => show($("agents-panel"), false));
  $("agent-create").addEventListener("submit", (e) => { e.preventDefault(); createAgent(e.target); });
  $("password-button").addEventListener("click", () => show($("password-panel"), true));
  $("password-close").addEventListener("click", () => show($("password-panel"), false));
  $("password-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = e.target;
    try {
      await api.post("/me/password", { current: f.current.value, new: f.new.value });
      f.reset();
      show($("password-panel"), false);
      toast(t("password.changed"), "info");
    } catch (err) { toastError(err); }
  });
  $("lightbox").addEventListener("click", () => show($("lightbox"), false));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") { show($("lightbox"), false); show($("agents-panel"), false); show($("password-panel"), false); }
  });
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible" && S.openId) markReadSoon(); });
  setInterval(() => { if (S.openId) renderWindow(); }, 30000);
  api.whenUnauthorized(() => { if (S.me) logout(true); });
  window.addEventListener("hashchange", () => {
    const id = linkedConversation();
    if (id && S.me && id !== S.openId) openConversation(id);
  });
}

async function boot() {
  wire();
  applyStatic(document);
  if (!api.getToken()) { showLogin(); return; }
  // A server that cannot be reached (restarting behind a proxy, a network
  // blip) keeps the saved login, and is tried again: only a refused token
  // sends the agent to the login screen for good.
  const token = api.getToken();
  for (let wait = 1000, first = true; ; wait = Math.min(2 * wait, 30000), first = false) {
    try {
      const me = await api.get("/me");
      if (api.getToken() === token) startApp(me);
      return;
    } catch (e) {
      if (S.me || api.getToken() !== token) return; // logged in meanwhile
      if (e.status === 401) { api.setToken(""); showLogin(); return; }
      // The login form stays usable meanwhile: shown once, then left alone
      // (no refocus, no message over one of its own) while the agent uses it.
      if (first) showLogin(t("error.network"));
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

boot();
