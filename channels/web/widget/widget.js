/*
 * kefu visitor widget. Embed it with one tag:
 *
 *   <script src="https://support.example.com/widget.js" async></script>
 *
 * Optional attributes on that tag:
 *   data-lang="zh|en"      UI language (default: the browser's)
 *   data-title="…"         the panel's title
 *   data-user-id, data-user-ts, data-user-sig
 *                          a verified identity your backend signed (docs/protocol.md,
 *                          "Verified identities"); data-user-name: the visitor's name
 *   data-transport="poll"  long polling only (default: WebSocket, falling back to polling)
 *   data-open="true"       open the panel on load
 *
 * It talks to the kefu server it was loaded from with the protocol in docs/protocol.md:
 * a visitor session (token kept in localStorage), history, a WebSocket (or long polling
 * when WebSockets fail), resume by sequence number, receipts and typing; images and
 * files are uploaded, then sent by key, and shown from blob URLs fetched with the token.
 * Message text is only ever set with textContent: nothing a message holds is parsed as HTML.
 *
 * Test selectors. The widget lives in the open shadow root of
 *   <div id="kefu-widget" data-testid="kefu-widget" data-state="connecting|ws|poll|offline" data-lang="en|zh">
 * so reach in with
 *   document.querySelector("#kefu-widget").shadowRoot.querySelector('[data-testid="…"]')
 * (chromedp: chromedp.ByJSPath). data-testid values:
 *   kefu-launcher    the round button that opens and closes the panel (aria-expanded)
 *   kefu-badge       unread count on the launcher (hidden when 0)
 *   kefu-panel       the panel (hidden attribute when closed)
 *   kefu-title       the title;  kefu-agent  the agent's name (or the subtitle)
 *   kefu-number      the conversation's number, "#123" (hidden before the first message)
 *   kefu-notice      a notice line: connection or upload problems (hidden when none)
 *   kefu-more        "earlier messages" (hidden when there are none)
 *   kefu-messages    the message list
 *   kefu-message     one message, with data-id (message id, once stored), data-client-id
 *                    (visitor's own messages), data-seq, data-sender (contact|agent|bot|system),
 *                    data-kind (text|image|file|event)
 *   kefu-sender      the sender's name on agent and bot messages
 *   kefu-text        a message's text (and an event's description)
 *   kefu-image       an image (<img>, data-loaded="true" once shown)
 *   kefu-file        a file (a button that downloads it)
 *   kefu-progress    an upload's progress (<progress>)
 *   kefu-status      the status of a visitor's own message: data-status =
 *                    sending|sent|delivered|read|failed (failed: click to retry)|
 *                    refused (a file the server will never take: no retry)
 *   kefu-typing      "… is typing" (hidden when nobody is)
 *   kefu-input       the text box;  kefu-send  the send button
 *   kefu-attach      the attach button;  kefu-file-input  its <input type="file">
 */
(function () {
  "use strict";
  if (window.KefuWidget) return; // one widget per page

  var script = document.currentScript || (function () {
    var all = document.querySelectorAll('script[src*="widget.js"]');
    return all[all.length - 1];
  })();
  var base = new URL(script.src, location.href).origin;
  function attr(n) { return (script.getAttribute("data-" + n) || "").trim(); }

  // ---- strings ----

  var STRINGS = {
    en: {
      title: "Chat with us", subtitle: "We usually reply within minutes", open: "Open chat", close: "Close chat",
      placeholder: "Type a message…", send: "Send", attach: "Send a file",
      sending: "Sending…", sent: "Sent", delivered: "Delivered", read: "Read", failed: "Not sent · retry", refused: "Not sent",
      typing: "{name} is typing…", agent: "Support", bot: "Auto-reply",
      assigned: "{name} joined the conversation", transferred: "Transferred to {name}",
      resolved: "This conversation was closed", reopened: "The conversation was reopened",
      unassigned: "Waiting for the next agent",
      earlier: "Earlier messages", reconnecting: "Reconnecting…", download: "Download",
      tooLarge: "This file is too large", badType: "This file type cannot be sent",
      tooLong: "This message is too long: please shorten it or send it in parts.",
      uploadFailed: "The upload failed", notFound: "File not available",
      identity: "Could not verify your account; chatting as a guest.", unavailable: "Chat is unavailable right now.",
      number: "Conversation {name}"
    },
    zh: {
      title: "在线客服", subtitle: "我们通常会在几分钟内回复", open: "打开聊天", close: "关闭聊天",
      placeholder: "输入消息…", send: "发送", attach: "发送文件",
      sending: "发送中…", sent: "已发送", delivered: "已送达", read: "已读", failed: "未发送 · 重试", refused: "未发送",
      typing: "{name} 正在输入…", agent: "客服", bot: "自动回复",
      assigned: "{name} 已加入对话", transferred: "已转接给 {name}",
      resolved: "本次对话已结束", reopened: "对话已重新打开",
      unassigned: "正在等待客服接入",
      earlier: "更早的消息", reconnecting: "正在重新连接…", download: "下载",
      tooLarge: "文件太大", badType: "不支持发送此类文件",
      tooLong: "消息太长，请缩短或分几条发送。",
      uploadFailed: "上传失败", notFound: "文件不可用",
      identity: "无法验证您的账号，将以访客身份聊天。", unavailable: "聊天暂不可用。",
      number: "对话 {name}"
    }
  };
  var lang = attr("lang");
  if (!STRINGS[lang]) {
    var nav = (navigator.languages && navigator.languages[0]) || navigator.language || "en";
    lang = /^zh\b/i.test(nav) ? "zh" : "en";
  }
  var L = STRINGS[lang];
  // A function, not a string: "$&" or "$'" in a name are not patterns.
  function fmt(s, name) { return s.replace("{name}", function () { return name; }); }

  // ---- DOM helpers: text goes in with textContent, never as HTML ----

  function h(tag, props, kids) {
    var e = document.createElement(tag);
    for (var k in props) {
      var v = props[k];
      if (v == null || v === false) continue;
      if (k === "text") e.textContent = v;
      else if (k.indexOf("on") === 0) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    (kids || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }
  function show(e, on) { if (on) e.removeAttribute("hidden"); else e.setAttribute("hidden", ""); }

  function icon(paths) {
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    paths.forEach(function (d) {
      var p = document.createElementNS(ns, "path");
      p.setAttribute("d", d);
      svg.appendChild(p);
    });
    return svg;
  }
  var ICON_CHAT = ["M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z"];
  var ICON_CLOSE = ["M6 6l12 12M18 6L6 18"];
  var ICON_CLIP = ["M21 11l-8.5 8.5a5 5 0 0 1-7-7L14 4a3.5 3.5 0 0 1 5 5l-8.5 8.5a2 2 0 0 1-3-3L15 7"];
  var ICON_SEND = ["M3 20l18-8L3 4l2 8-2 8zM5 12h8"];

  var CSS = [
    ":host{all:initial}",
    "*{box-sizing:border-box;font-family:system-ui,-apple-system,'Segoe UI','PingFang SC','Microsoft YaHei',sans-serif}",
    "[hidden]{display:none!important}",
    "button{font:inherit;color:inherit}",
    "svg{width:22px;height:22px;fill:none;stroke:currentColor;stroke-width:2;stroke-linecap:round;stroke-linejoin:round}",
    ".launcher{position:fixed;right:20px;bottom:20px;width:56px;height:56px;border-radius:50%;border:0;background:#2563eb;color:#fff;cursor:pointer;",
    "box-shadow:0 4px 14px rgba(0,0,0,.25);z-index:2147483647;display:flex;align-items:center;justify-content:center}",
    ".launcher svg{width:26px;height:26px}",
    ".badge{position:absolute;top:-4px;right:-4px;min-width:20px;height:20px;padding:0 6px;border-radius:10px;background:#dc2626;color:#fff;font-size:12px;line-height:20px;text-align:center}",
    ".panel{position:fixed;right:20px;bottom:88px;width:370px;max-width:calc(100vw - 40px);height:560px;max-height:calc(100vh - 110px);display:flex;flex-direction:column;",
    "background:#fff;color:#111827;border-radius:14px;box-shadow:0 10px 40px rgba(0,0,0,.22);overflow:hidden;z-index:2147483647;font-size:14px;line-height:1.45}",
    ".head{background:#2563eb;color:#fff;padding:14px 16px;display:flex;align-items:center;gap:10px}",
    ".head .who{flex:1;min-width:0}",
    ".title{font-weight:600;font-size:16px}",
    ".titlerow{display:flex;align-items:baseline;gap:8px}",
    ".num{opacity:.8;font-size:12px;white-space:nowrap}",
    ".agent{opacity:.85;font-size:12px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}",
    ".x{background:none;border:0;color:#fff;cursor:pointer;padding:4px;display:flex}",
    ".notice{background:#fef3c7;color:#92400e;padding:6px 12px;font-size:12px}",
    ".list{flex:1;overflow-y:auto;padding:12px;background:#f9fafb;display:flex;flex-direction:column;gap:8px}",
    ".more{align-self:center;background:none;border:0;color:#2563eb;cursor:pointer;font-size:12px}",
    ".msg{display:flex;flex-direction:column;max-width:80%}",
    ".me{align-self:flex-end;align-items:flex-end}",
    ".them{align-self:flex-start;align-items:flex-start}",
    ".sys{align-self:center;max-width:90%;color:#6b7280;font-size:12px;text-align:center}",
    ".name{font-size:11px;color:#6b7280;margin:0 4px 2px}",
    ".bubble{padding:8px 12px;border-radius:14px;white-space:pre-wrap;word-wrap:break-word;overflow-wrap:anywhere}",
    ".me .bubble{background:#2563eb;color:#fff;border-bottom-right-radius:4px}",
    ".them .bubble{background:#fff;border:1px solid #e5e7eb;border-bottom-left-radius:4px}",
    ".bubble.pic{padding:0;background:none!important;border:0!important}",
    ".bubble img{display:block;max-width:220px;max-height:220px;border-radius:8px;margin:2px 0;background:#e5e7eb;min-width:60px;min-height:40px}",
    ".file{background:none;border:0;padding:0;cursor:pointer;text-decoration:underline;text-align:left}",
    ".me .file{color:#fff}.them .file{color:#2563eb}",
    ".meta{font-size:11px;color:#9ca3af;margin:2px 4px 0}",
    ".status[data-status=failed]{color:#dc2626;cursor:pointer}.status[data-status=refused]{color:#dc2626}",
    "progress{width:160px;height:6px;display:block;margin-top:4px}",
    ".err{color:#dc2626;font-size:12px;margin-top:2px}",
    ".typing{padding:4px 14px;font-size:12px;color:#6b7280;background:#f9fafb}",
    ".composer{display:flex;align-items:flex-end;gap:6px;padding:8px;border-top:1px solid #e5e7eb;background:#fff}",
    ".composer textarea{flex:1;resize:none;border:1px solid #d1d5db;border-radius:10px;padding:8px 10px;font-size:14px;line-height:1.4;max-height:120px;min-height:38px;outline:none;color:#111827;background:#fff}",
    ".composer textarea:focus{border-color:#2563eb}",
    ".icon{background:none;border:0;color:#6b7280;cursor:pointer;padding:8px;display:flex;border-radius:8px}",
    ".icon:hover{background:#f3f4f6}.send{color:#2563eb}",
    "@media (max-width:480px){.panel{right:0;bottom:0;width:100vw;max-width:100vw;height:100%;max-height:100%;border-radius:0}",
    ".launcher[aria-expanded=true]{display:none}}"
  ].join("\n");

  // ---- the widget's elements ----

  var host = h("div", { id: "kefu-widget", "data-testid": "kefu-widget", "data-state": "connecting", "data-lang": lang });
  var root = host.attachShadow({ mode: "open" });
  if (root.adoptedStyleSheets !== undefined && typeof CSSStyleSheet === "function" && CSSStyleSheet.prototype.replaceSync) {
    var sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    root.adoptedStyleSheets = [sheet];
  } else {
    root.appendChild(h("style", { text: CSS }));
  }

  var badge = h("span", { "class": "badge", "data-testid": "kefu-badge", hidden: true });
  var launcher = h("button", { "class": "launcher", type: "button", "data-testid": "kefu-launcher",
    "aria-label": L.open, "aria-expanded": "false", onclick: function () { setOpen(!isOpen); } },
    [icon(ICON_CHAT), badge]);
  var titleEl = h("div", { "class": "title", "data-testid": "kefu-title", text: attr("title") || L.title });
  var agentEl = h("div", { "class": "agent", "data-testid": "kefu-agent", text: L.subtitle });
  // The conversation's number, which agents see too: a customer can quote
  // it by mail or phone.
  var numEl = h("div", { "class": "num", "data-testid": "kefu-number", hidden: true });
  var notice = h("div", { "class": "notice", "data-testid": "kefu-notice", role: "status", hidden: true });
  var more = h("button", { "class": "more", type: "button", "data-testid": "kefu-more", text: L.earlier, hidden: true,
    onclick: function () { loadHistory(true); } });
  var list = h("div", { "class": "list", "data-testid": "kefu-messages", role: "log", "aria-live": "polite" }, [more]);
  var typingEl = h("div", { "class": "typing", "data-testid": "kefu-typing", hidden: true });
  var input = h("textarea", { rows: "1", dir: "auto", placeholder: L.placeholder, "aria-label": L.placeholder,
    "data-testid": "kefu-input" });
  var fileInput = h("input", { type: "file", "data-testid": "kefu-file-input", hidden: true, tabindex: "-1" });
  var attachBtn = h("button", { "class": "icon", type: "button", title: L.attach, "aria-label": L.attach,
    "data-testid": "kefu-attach", onclick: function () { fileInput.click(); } }, [icon(ICON_CLIP)]);
  var sendBtn = h("button", { "class": "icon send", type: "button", title: L.send, "aria-label": L.send,
    "data-testid": "kefu-send", onclick: submit }, [icon(ICON_SEND)]);
  var panel = h("div", { "class": "panel", "data-testid": "kefu-panel", role: "dialog", "aria-label": attr("title") || L.title, hidden: true }, [
    h("div", { "class": "head" }, [
      h("div", { "class": "who" }, [h("div", { "class": "titlerow" }, [titleEl, numEl]), agentEl]),
      h("button", { "class": "x", type: "button", "aria-label": L.close, onclick: function () { setOpen(false); } }, [icon(ICON_CLOSE)])
    ]),
    notice, list, typingEl,
    h("div", { "class": "composer" }, [attachBtn, fileInput, input, sendBtn])
  ]);
  root.appendChild(panel);
  root.appendChild(launcher);

  // ---- state ----

  var S = {
    token: "", pingMs: 25000, pollMs: 25000,
    conv: 0, seq: 0,          // the resume cursor (docs/protocol.md, "Resume and cursors")
    histConv: 0, histSeq: 0,  // where "earlier messages" continues
    byId: {},                 // message id → {m, el}
    pending: [],              // the visitor's sends not yet acked: {cid, kind, frame, el, …}
    delivered: {}, read: {},  // conversation → seq reported in receipts
    unread: 0,
    agentFrom: 0              // the message the header's agent name comes from
  };
  var isOpen = false;
  var storeKey = "kefu:" + base + ":session";
  var userID = attr("user-id");

  function setState(s) { host.setAttribute("data-state", s); }
  function setNotice(text) { notice.textContent = text || ""; show(notice, !!text); }
  function clearConnNotice() {
    if (notice.textContent === L.reconnecting || notice.textContent === L.unavailable) setNotice("");
  }

  function setOpen(on) {
    isOpen = on;
    show(panel, on);
    launcher.setAttribute("aria-expanded", on ? "true" : "false");
    launcher.setAttribute("aria-label", on ? L.close : L.open);
    if (on) {
      S.unread = 0;
      updateBadge();
      scrollDown(true);
      input.focus();
      markRead();
    }
  }
  function updateBadge() { badge.textContent = String(S.unread); show(badge, S.unread > 0); }

  // ---- HTTP ----

  // req sends a JSON request to kefu and resolves to {status, body, headers}.
  function req(method, path, body, signal) {
    var headers = {};
    if (S.token) headers.Authorization = "Bearer " + S.token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(base + path, {
      method: method, headers: headers, signal: signal, credentials: "omit",
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (r) {
      return r.json().catch(function () { return null; }).then(function (b) {
        return { status: r.status, body: b, headers: r.headers };
      });
    });
  }
  function retryAfter(r) { return (parseInt(r.headers.get("Retry-After"), 10) || 1) * 1000; }

  // ---- session ----

  function loadSaved() {
    try { return JSON.parse(localStorage.getItem(storeKey) || "null"); } catch (e) { return null; }
  }
  function save(token) {
    try { localStorage.setItem(storeKey, JSON.stringify({ token: token, user: userID })); } catch (e) { /* private mode */ }
  }

  // startSession resumes the saved session (or starts one) and keeps the newest token.
  // A token saved for another signed-in user (or for a user who has since signed out)
  // is not reused, so a shared computer never shows one user's chat to another.
  function startSession(withIdentity) {
    var saved = loadSaved();
    var body = {};
    if (saved && saved.token && (saved.user || "") === userID) body.token = saved.token;
    if (attr("user-name")) body.name = attr("user-name");
    if (withIdentity && userID && attr("user-sig")) {
      body.identity = { user_id: userID, timestamp: parseInt(attr("user-ts"), 10) || 0, signature: attr("user-sig") };
    }
    return req("POST", "/api/v1/visitor/session", body).then(function (r) {
      if (r.status === 401 && body.identity) {
        console.warn("kefu: the visitor identity was refused (signature wrong or too old); continuing as a guest");
        setNotice(L.identity);
        userID = "";
        return startSession(false);
      }
      if (r.status === 401 && body.token) { save(""); return startSession(false); }
      if (r.status === 429) return wait(retryAfter(r)).then(function () { return startSession(withIdentity); });
      if (r.status !== 200) throw new Error("session: HTTP " + r.status);
      S.token = r.body.token;
      S.pingMs = r.body.ping_interval_ms || S.pingMs;
      S.pollMs = r.body.long_poll_timeout_ms || S.pollMs;
      save(S.token);
      return r.body;
    });
  }
  function wait(ms) { return new Promise(function (res) { setTimeout(res, ms); }); }

  // ---- history ----

  function loadHistory(earlier) {
    var q = "?limit=50";
    if (earlier) q += "&conversation_id=" + S.histConv + "&before_seq=" + S.histSeq;
    return req("GET", "/api/v1/visitor/messages" + q).then(function (r) {
      if (r.status === 404) return; // no conversation yet
      if (r.status !== 200) throw new Error("history: HTTP " + r.status);
      var b = r.body, ms = b.messages || [];
      var keep = list.scrollHeight - list.scrollTop;
      ms.forEach(function (m) { upsert(m, false); });
      if (ms.length) { S.histConv = b.conversation.id; S.histSeq = ms[0].seq; }
      show(more, b.has_more);
      if (!earlier) {
        advance(b.conversation.id, b.conversation.last_seq);
        scrollDown(true);
      } else {
        list.scrollTop = list.scrollHeight - keep;
      }
    });
  }

  // ---- messages ----

  // advance moves the cursor forward: a newer conversation replaces it, a higher seq raises it.
  function advance(conv, seq) {
    if (!conv) return;
    if (conv > S.conv) { S.conv = conv; S.seq = seq || 0; } else if (conv === S.conv && seq > S.seq) S.seq = seq;
    showNumber();
  }
  // settle takes the server's cursor (synced, a long-poll answer) as it is:
  // below ours when ours was past the conversation's end.
  function settle(conv, seq) {
    if (conv && conv >= S.conv) { S.conv = conv; S.seq = seq || 0; }
    showNumber();
  }
  // showNumber shows the number of the conversation the cursor is in.
  function showNumber() {
    var n = S.conv ? "#" + S.conv : "";
    if (numEl.textContent === n) return;
    numEl.textContent = n;
    numEl.hidden = !n;
    if (n) numEl.setAttribute("aria-label", fmt(L.number, n)); else numEl.removeAttribute("aria-label");
  }

  var RANK = { pending: 0, sending: 0, sent: 1, delivered: 2, read: 3 };
  function forward(from, to) {
    if (from === "failed" || from === to) return false;
    if (to === "failed") return from !== "read";
    return RANK[to] > (RANK[from] || 0);
  }

  // upsert shows a message from the server (history, replay, live, ack), once per id.
  function upsert(m, live) {
    var known = S.byId[m.id];
    if (known) {
      if (forward(known.m.status, m.status)) { known.m.status = m.status; setStatus(known.el, m.status); }
      return;
    }
    var p = m.sender_kind === "contact" ? adopt(m) : null;
    var el;
    if (p) {
      el = p.el;
      dropPending(p);
      p.m.id = m.id; // the media buttons' message, now stored
      p.m.media = m.media;
      el.setAttribute("data-id", m.id);
      el.setAttribute("data-seq", m.seq);
      el.setAttribute("data-conv", m.conversation_id);
      setStatus(el, m.status);
      place(el);
    } else {
      el = render(m);
      place(el);
    }
    S.byId[m.id] = { m: m, el: el };
    // The header names the agent of the newest message, not of history
    // loaded above it.
    if (m.id > S.agentFrom) {
      if (m.sender_kind === "agent" && m.sender_name) { S.agentFrom = m.id; setAgent(m.sender_name); }
      if (m.kind === "event" && m.event && m.event.agent_name && (m.event.type === "assigned" || m.event.type === "transferred")) {
        S.agentFrom = m.id;
        setAgent(m.event.agent_name);
      }
    }
    if (m.sender_kind === "agent") showTyping(false);
    if (live && m.sender_kind !== "contact" && m.kind !== "event") {
      if (!isOpen || document.hidden) { S.unread++; updateBadge(); }
      receipt(m.conversation_id, m.seq);
    }
    scrollDown(false);
  }

  // adopt finds the visitor's own pending send that m is (an echo can arrive before its ack).
  function adopt(m) {
    for (var i = 0; i < S.pending.length; i++) {
      var p = S.pending[i];
      if (p.id === m.id) return p;
      if (!p.id && p.frame && p.sentAt && (
        (m.kind === "text" && p.kind === "text" && p.frame.text === m.text) ||
        (m.media && p.frame.media && p.frame.media.key === m.media.key))) return p;
    }
    return null;
  }
  function dropPending(p) {
    var i = S.pending.indexOf(p);
    if (i >= 0) S.pending.splice(i, 1);
    saveOutbox();
    var pr = p.el.querySelector("progress");
    if (pr) pr.remove();
  }

  // place puts el in order: by conversation, then seq; messages not yet stored go last.
  function place(el) {
    var conv = +el.getAttribute("data-conv"), seq = +el.getAttribute("data-seq");
    var kids = list.children, before = null;
    for (var i = kids.length - 1; i >= 0; i--) {
      var k = kids[i];
      if (k === more) break;
      if (k === el) continue;
      var kc = k.getAttribute("data-conv"), ks = +k.getAttribute("data-seq");
      if (kc === null || +kc > conv || (+kc === conv && ks > seq)) { before = k; continue; }
      break;
    }
    if (!seq) before = null; // a pending message: at the end
    if (el.parentNode === list && el.nextSibling === before) return;
    list.insertBefore(el, before);
  }

  function render(m) {
    var who = m.sender_kind === "contact" ? "me" : m.kind === "event" ? "sys" : "them";
    var el = h("div", { "class": "msg " + who, "data-testid": "kefu-message", "data-id": m.id, "data-seq": m.seq,
      "data-conv": m.conversation_id, "data-sender": m.sender_kind, "data-kind": m.kind });
    if (m.kind === "event") {
      el.appendChild(h("div", { "data-testid": "kefu-text", text: eventText(m.event || {}) }));
      return el;
    }
    if (who === "them") {
      var name = m.sender_kind === "bot" ? L.bot : (m.sender_name || L.agent);
      el.appendChild(h("div", { "class": "name", "data-testid": "kefu-sender", text: name }));
    }
    var bubble = h("div", { "class": m.kind === "image" && !m.text ? "bubble pic" : "bubble" });
    if (m.kind === "image" || m.kind === "file") bubble.appendChild(mediaView(m));
    if (m.text) bubble.appendChild(h("div", { "data-testid": "kefu-text", dir: "auto", text: m.text }));
    el.appendChild(bubble);
    var meta = h("div", { "class": "meta" }, [h("span", { text: clock(m.created_at) })]);
    el.appendChild(meta);
    if (who === "me") {
      meta.appendChild(document.createTextNode(" · "));
      meta.appendChild(h("span", { "class": "status", "data-testid": "kefu-status" }));
      setStatus(el, m.status);
    }
    return el;
  }

  function eventText(ev) {
    var name = ev.agent_name || L.agent;
    switch (ev.type) {
      case "assigned": return fmt(L.assigned, name);
      case "transferred": return fmt(L.transferred, name);
      case "resolved": return L.resolved;
      case "reopened": return L.reopened;
      case "unassigned": return L.unassigned;
    }
    return "";
  }

  function clock(iso) {
    var d = iso ? new Date(iso) : new Date();
    return isNaN(d) ? "" : d.toLocaleTimeString(lang === "zh" ? "zh-CN" : "en", { hour: "2-digit", minute: "2-digit" });
  }

  function setStatus(el, status) {
    var s = el.querySelector('[data-testid="kefu-status"]');
    if (!s) return;
    s.setAttribute("data-status", status === "pending" ? "sending" : status);
    s.textContent = L[status === "pending" ? "sending" : status] || status;
  }

  function setAgent(name) { agentEl.textContent = name; }

  function scrollDown(force) {
    var near = list.scrollHeight - list.scrollTop - list.clientHeight < 120;
    if (force || near) list.scrollTop = list.scrollHeight;
  }

  // ---- media ----

  var blobs = {}; // "key|preview" → Promise of a blob URL

  // fetchMedia downloads a file of the visitor's with the token in the header
  // (never in a URL) and returns a blob URL for it.
  function fetchMedia(m, preview) {
    var k = m.media.key + "|" + (preview ? 1 : 0);
    if (!blobs[k]) {
      var url = base + "/api/v1/visitor/media/" + encodeURIComponent(m.media.key) + "?message_id=" + m.id + (preview ? "&preview=1" : "");
      blobs[k] = fetch(url, { headers: { Authorization: "Bearer " + S.token }, credentials: "omit" }).then(function (r) {
        if (!r.ok) throw new Error(String(r.status));
        return r.blob();
      }).then(function (b) { return URL.createObjectURL(b); });
      blobs[k].catch(function () { delete blobs[k]; });
    }
    return blobs[k];
  }

  function mediaView(m) {
    var md = m.media || {};
    if (m.kind === "image") {
      var img = h("img", { "data-testid": "kefu-image", alt: md.name || "" });
      img.addEventListener("load", function () { img.setAttribute("data-loaded", "true"); scrollDown(false); });
      var local = m.localURL;
      if (local) img.src = local;
      else {
        // The preview, or the original when there is none and it is small.
        fetchMedia(m, true).catch(function (e) {
          if (md.size && md.size <= 5 << 20) return fetchMedia(m, false);
          throw e;
        }).then(function (u) { img.src = u; }, function () { img.replaceWith(fileButton(m)); });
      }
      img.addEventListener("click", function () { download(m); });
      img.style.cursor = "pointer";
      return img;
    }
    return fileButton(m);
  }

  function fileButton(m) {
    var md = m.media || {};
    return h("button", { "class": "file", type: "button", "data-testid": "kefu-file", title: L.download,
      text: "📎 " + (md.name || L.download) + (md.size ? " (" + size(md.size) + ")" : ""),
      onclick: function () { download(m); } });
  }

  function download(m) {
    if (!m.id) return;
    fetchMedia(m, false).then(function (u) {
      var a = h("a", { href: u, download: (m.media && m.media.name) || "" });
      root.appendChild(a);
      a.click();
      a.remove();
    }, function () { setNotice(L.notFound); });
  }

  function size(n) {
    if (n < 1024) return n + " B";
    if (n < 1 << 20) return Math.round(n / 1024) + " KB";
    return (n / 1048576).toFixed(1) + " MB";
  }

  // upload sends file to kefu, reporting progress, and resolves to its media reference.
  function upload(file, progress) {
    return new Promise(function (resolve, reject) {
      var x = new XMLHttpRequest();
      x.open("POST", base + "/api/v1/visitor/uploads");
      x.setRequestHeader("Authorization", "Bearer " + S.token);
      x.upload.onprogress = function (e) { if (e.lengthComputable) progress(e.loaded / e.total); };
      x.onload = function () {
        if (x.status === 201) {
          try { resolve(JSON.parse(x.responseText)); } catch (e) { reject(0); }
        } else reject(x.status);
      };
      x.onerror = function () { reject(0); };
      var fd = new FormData();
      fd.append("file", file, file.name);
      x.send(fd);
    });
  }

  // ---- sending ----

  // MAX_TEXT is the most bytes of text a message may carry (docs/protocol.md).
  var MAX_TEXT = 16384;
  function utf8Length(s) {
    if (window.TextEncoder) return new TextEncoder().encode(s).length;
    return unescape(encodeURIComponent(s)).length;
  }

  var seqNo = 0;
  function clientID() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "c-" + Date.now().toString(36) + "-" + (++seqNo) + "-" + Math.random().toString(36).slice(2, 10);
  }

  // newPending shows a message the visitor is sending, before it is stored
  // (cid: a send restored from the outbox keeps its id).
  function newPending(m, cid) {
    var p = { cid: cid || clientID(), kind: m.kind, m: m, frame: null, el: null, id: 0, sentAt: 0 };
    m.status = "pending";
    m.sender_kind = "contact";
    p.el = render(m);
    p.el.removeAttribute("data-id");
    p.el.removeAttribute("data-seq");
    p.el.removeAttribute("data-conv");
    p.el.setAttribute("data-client-id", p.cid);
    var st = p.el.querySelector('[data-testid="kefu-status"]');
    st.addEventListener("click", function () {
      if (st.getAttribute("data-status") !== "failed") return;
      if (p.frame) { clearError(p); transmit(p); } else if (p.upload) { clearError(p); p.upload(); }
    });
    S.pending.push(p);
    list.appendChild(p.el);
    scrollDown(true);
    return p;
  }

  function submit() {
    var text = input.value;
    if (!text.trim()) return;
    if (utf8Length(text) > MAX_TEXT) { setNotice(L.tooLong); return; } // kept in the box, to shorten
    if (notice.textContent === L.tooLong) setNotice("");
    input.value = "";
    autosize();
    stopTyping();
    var p = newPending({ kind: "text", text: text });
    p.frame = { type: "send", id: p.cid, text: text };
    transmit(p);
    input.focus();
  }

  function sendFile(file) {
    var image = /^image\/(png|jpeg|gif|webp)$/.test(file.type);
    var m = { kind: image ? "image" : "file", media: { name: file.name, size: file.size } };
    if (image) m.localURL = URL.createObjectURL(file);
    var p = newPending(m);
    var attempt = function (again, bar) {
      return upload(file, function (f) { bar.value = f; }).catch(function (status) {
        if (status === 401 && !again) return startSession(true).then(function () { return attempt(true, bar); });
        throw status;
      });
    };
    // p.upload starts the upload, and again when "Not sent · retry" is
    // tapped after it failed (the file is kept until then).
    p.upload = function () {
      var bar = h("progress", { max: "1", value: "0", "data-testid": "kefu-progress" });
      p.el.querySelector(".bubble").appendChild(bar);
      setStatus(p.el, "sending");
      attempt(false, bar).then(function (md) {
        bar.remove();
        p.upload = null;
        var kind = image && /^image\//.test(md.type) ? "image" : "file";
        p.frame = { type: "send", id: p.cid, kind: kind, media: { key: md.key, name: md.name || file.name } };
        transmit(p);
      }, function (status) {
        bar.remove();
        if (status === 413 || status === 415) { // no retry makes it go
          p.upload = null;
          fail(p, status === 413 ? L.tooLarge : L.badType, true);
        } else {
          fail(p, L.uploadFailed);
        }
      });
    };
    p.upload();
  }

  // transmit sends (or, when offline, queues) a pending message; unacked sends
  // go out again on every (re)connection, and the server stores each id once.
  function transmit(p) {
    setStatus(p.el, "sending");
    p.sentAt = Date.now();
    saveOutbox();
    if (holdUntil > Date.now()) return; // the hold's end sends it, in order
    if (wsReady) ws.send(JSON.stringify(p.frame));
    else if (polling) post([p.frame]);
  }
  function flush() { S.pending.forEach(function (p) { if (p.frame && !p.failed) transmit(p); }); }

  // hold stops sending for ms (the server said rate_limited); when it
  // ends, one timer sends every waiting message again, in the order they
  // were written (a timer per message would store them in any order).
  var holdUntil = 0, holdTimer = 0;
  function hold(ms) {
    holdUntil = Math.max(holdUntil, Date.now() + ms);
    clearTimeout(holdTimer);
    holdTimer = setTimeout(function () { holdTimer = 0; holdUntil = 0; flush(); }, holdUntil - Date.now());
  }

  // The outbox keeps the sends not yet acknowledged in localStorage, so
  // that a message written while the connection was down still goes when
  // the visitor comes back after leaving the page (the server stores each
  // id once: one that did arrive is only acknowledged again).
  var outKey = storeKey + ":outbox";
  function saveOutbox() {
    var items = S.pending.filter(function (p) { return p.frame && p.frame.type === "send" && !p.failed; })
      .map(function (p) { return { cid: p.cid, frame: p.frame, m: { kind: p.m.kind, text: p.m.text, media: p.m.media } }; });
    try {
      if (items.length) localStorage.setItem(outKey, JSON.stringify({ user: userID, items: items }));
      else localStorage.removeItem(outKey);
    } catch (e) { /* private mode, or full */ }
  }
  function restoreOutbox() {
    var saved = null;
    try { saved = JSON.parse(localStorage.getItem(outKey) || "null"); } catch (e) { /* unreadable: none */ }
    if (!saved || (saved.user || "") !== userID || !saved.items || !saved.items.forEach) return;
    saved.items.forEach(function (it) {
      if (!it || !it.cid || !it.frame || it.frame.type !== "send" || pendingOf(it.cid)) return;
      var p = newPending(it.m || { kind: "text", text: it.frame.text }, it.cid);
      p.frame = it.frame;
      setStatus(p.el, "sending");
    });
  }

  // fail marks p not sent, with why; final when trying again cannot help.
  function fail(p, why, final) {
    p.failed = true;
    setStatus(p.el, final ? "refused" : "failed");
    clearError(p);
    p.el.appendChild(h("div", { "class": "err", text: why }));
    saveOutbox();
  }
  function clearError(p) {
    p.failed = false;
    var e = p.el.querySelector(".err");
    if (e) e.remove();
  }

  function onAck(f) {
    var p = pendingOf(f.id);
    if (!p) return;
    var m = f.message;
    if (S.byId[m.id]) { // its echo came first and was shown on its own
      if (S.byId[m.id].el !== p.el) { dropPending(p); p.el.remove(); }
      return;
    }
    p.id = m.id;
    upsert(m, false);
  }

  function onError(f) {
    var e = f.error || {};
    var p = f.id && pendingOf(f.id);
    if (!p) return;
    if (e.code === "rate_limited") hold(e.retry_after_ms || 1000);
    else fail(p, e.message || L.failed);
  }

  // ---- signals: typing and receipts ----

  function signal(f) {
    if (wsReady) ws.send(JSON.stringify(f));
    else if (polling && S.token) post([f]);
  }

  var typingOn = false, typingAt = 0, typingTimer = 0;
  function onInput() {
    autosize();
    if (!input.value.trim()) { stopTyping(); return; }
    var now = Date.now();
    if (!typingOn || now - typingAt > 3000) {
      typingOn = true;
      typingAt = now;
      signal(typingFrame(true));
    }
    clearTimeout(typingTimer);
    typingTimer = setTimeout(stopTyping, 4000);
  }
  function stopTyping() {
    clearTimeout(typingTimer);
    if (typingOn) { typingOn = false; signal(typingFrame(false)); }
  }
  function typingFrame(on) {
    var f = { type: "typing", on: on };
    if (S.conv) f.conversation_id = S.conv;
    return f;
  }

  var theirTyping = 0;
  function showTyping(on, name) {
    clearTimeout(theirTyping);
    if (on) {
      typingEl.textContent = fmt(L.typing, name || L.agent);
      theirTyping = setTimeout(function () { show(typingEl, false); }, 6000);
    }
    show(typingEl, on);
  }

  // receipt reports agents' messages up to seq as delivered, and as read when the visitor can see them.
  function receipt(conv, seq) {
    if (seq > (S.delivered[conv] || 0)) {
      S.delivered[conv] = seq;
      signal({ type: "receipt", conversation_id: conv, seq: seq, status: "delivered" });
    }
    markRead();
  }
  function markRead() {
    if (!isOpen || document.hidden || !S.conv) return;
    var conv = S.conv, seq = S.seq;
    if (seq > (S.read[conv] || 0)) {
      S.read[conv] = seq;
      signal({ type: "receipt", conversation_id: conv, seq: seq, status: "read" });
    }
  }

  // onReceipt advances the visitor's own messages an agent received or read.
  function onReceipt(f) {
    if (f.by !== "agent") return;
    for (var id in S.byId) {
      var k = S.byId[id];
      if (k.m.sender_kind === "contact" && k.m.conversation_id === f.conversation_id && k.m.seq <= f.seq && forward(k.m.status, f.status)) {
        k.m.status = f.status;
        setStatus(k.el, f.status);
      }
    }
  }

  // ---- incoming frames (both transports) ----

  function handle(f) {
    switch (f.type) {
      case "message":
        advance(f.message.conversation_id, f.message.seq);
        upsert(f.message, true);
        break;
      case "synced":
        settle(f.conversation_id, f.last_seq);
        if (S.conv) receipt(S.conv, S.seq);
        break;
      case "ack": onAck(f); break;
      case "error": onError(f); break;
      case "receipt": onReceipt(f); break;
      case "status": {
        var k = S.byId[f.message_id];
        if (k && forward(k.m.status, f.status)) { k.m.status = f.status; setStatus(k.el, f.status); }
        break;
      }
      case "typing":
        if (f.sender_kind === "agent") showTyping(f.on, f.sender_name);
        break;
    }
  }

  // ---- transports ----

  var ws = null, wsReady = false, wsFails = 0, lastRx = 0, retryTimer = 0;
  var polling = false, pollAbort = null, probeTimer = 0;
  var mode = attr("transport") === "poll" ? "poll" : "ws";
  var delay = 0;
  function backoff() { // 0.5 s doubling to 30 s, with jitter
    delay = Math.min(30000, delay ? delay * 2 : 500);
    return delay / 2 + Math.random() * delay / 2;
  }

  function connect() {
    clearTimeout(retryTimer);
    if (mode === "ws") openWS(false); else startPolling();
  }
  function reconnect(ms) {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, ms);
  }

  function openWS(probe) {
    if (!probe) setState("connecting");
    var sock;
    try { sock = new WebSocket(base.replace(/^http/, "ws") + "/ws/visitor"); } catch (e) { return wsClosed(null, 1006, false, probe); }
    var welcomed = false;
    if (!probe) ws = sock;
    sock.onopen = function () {
      var hello = { type: "hello", token: S.token };
      if (S.conv) { hello.conversation_id = S.conv; hello.last_seq = S.seq; }
      sock.send(JSON.stringify(hello));
    };
    sock.onmessage = function (ev) {
      lastRx = Date.now();
      var f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      if (f.type === "ping") { sock.send('{"type":"pong"}'); return; }
      if (f.type === "welcome") {
        welcomed = true;
        if (probe) { stopPolling(); mode = "ws"; }
        ws = sock;
        wsReady = true;
        wsFails = 0;
        delay = 0;
        setState("ws");
        clearConnNotice();
        flush();
        return;
      }
      if (ws === sock) handle(f);
    };
    sock.onclose = function (ev) { wsClosed(sock, ev.code, welcomed, probe && !welcomed); };
  }

  function wsClosed(sock, code, welcomed, probe) {
    if (probe) { scheduleProbe(); return; }
    if (sock && ws !== sock) return;
    ws = null;
    wsReady = false;
    if (code === 4001) { startSession(true).then(connect, offline); return; }
    if (!S.token) { offline(); return; }
    if (code === 4004) { S.conv = 0; S.seq = 0; showNumber(); }
    if (!welcomed && ++wsFails >= 2) { // WebSockets do not get through: poll, and try again later
      mode = "poll";
      scheduleProbe();
      connect();
      return;
    }
    setState("offline");
    if (welcomed) setNotice(L.reconnecting);
    reconnect(code === 1001 || code === 4002 || code === 4008 ? 0 : backoff());
  }

  function scheduleProbe() {
    clearTimeout(probeTimer);
    probeTimer = setTimeout(function () { if (mode === "poll") openWS(true); }, 60000);
  }

  // A WebSocket that has heard nothing for two ping intervals is dead: drop it
  // now rather than wait for the browser to notice.
  setInterval(function () {
    if (wsReady && Date.now() - lastRx > 2 * S.pingMs + 5000) {
      var dead = ws;
      dead.onclose = null;
      dead.close();
      wsClosed(dead, 4002, true, false);
    }
  }, 5000);
  window.addEventListener("online", function () { // the network is back: do not wait out the backoff
    if (S.token && !ws && !polling) { delay = 0; connect(); }
  });

  function startPolling() {
    if (polling) return;
    polling = true;
    setState("poll");
    flush();
    poll();
  }
  function stopPolling() {
    polling = false;
    if (pollAbort) pollAbort.abort();
  }

  function poll() {
    if (!polling) return;
    var q = S.conv ? "?conversation_id=" + S.conv + "&last_seq=" + S.seq : "";
    var ctl = pollAbort = new AbortController();
    var timer = setTimeout(function () { ctl.abort(); }, S.pollMs + 15000);
    req("GET", "/lp/visitor" + q, undefined, ctl.signal).then(function (r) {
      clearTimeout(timer);
      if (!polling) return;
      if (r.status === 200) {
        delay = 0;
        setState("poll");
        clearConnNotice();
        (r.body.frames || []).forEach(handle);
        settle(r.body.conversation_id, r.body.last_seq);
        if (S.conv) receipt(S.conv, S.seq);
        poll();
      } else if (r.status === 401) {
        startSession(true).then(poll, offline);
      } else if (r.status === 404) {
        S.conv = 0; S.seq = 0; showNumber(); poll();
      } else {
        setTimeout(poll, r.status === 429 ? retryAfter(r) : backoff());
      }
    }, function () {
      clearTimeout(timer);
      if (!polling) return;
      setState("offline");
      setNotice(L.reconnecting);
      setTimeout(poll, backoff());
    });
  }

  // post sends frames over long polling. One POST at a time, each carrying
  // what waits (at most 100 frames, about 32 KB): two requests in flight may
  // overtake each other, and the messages would be stored out of order.
  var postQ = [], posting = false;
  function post(frames) {
    postQ = postQ.concat(frames);
    if (!posting) postNext();
  }
  function postNext() {
    posting = postQ.length > 0;
    if (!posting) return;
    var n = 0, size = 0;
    while (n < postQ.length && n < 100) {
      var js = JSON.stringify(postQ[n]);
      size += /[^\x00-\x7f]/.test(js) ? 3 * js.length : js.length; // bytes, at most
      if (n > 0 && size > 32000) break;
      n++;
    }
    var frames = postQ.splice(0, n);
    var failed = function () {
      // What waits goes again with repost, in the order it was written.
      posting = false;
      postQ = postQ.filter(function (f) { return f.type !== "send"; });
      repost();
    };
    req("POST", "/lp/visitor", frames).then(function (r) {
      if (r.status === 200) { repostDelay = 0; (r.body.frames || []).forEach(handle); postNext(); }
      else if (r.status === 429) { postQ = frames.concat(postQ); setTimeout(postNext, retryAfter(r)); }
      else if (r.status === 400 || r.status === 413) { refuse(frames); postNext(); }
      else failed(); // 401 (the poll starts a new session), 5xx
    }, failed);
  }

  function pendingOf(cid) {
    for (var i = 0; i < S.pending.length; i++) if (S.pending[i].cid === cid) return S.pending[i];
    return null;
  }
  function waiting(f) { var p = f.type === "send" && pendingOf(f.id); return p && !p.id && !p.failed ? p : null; }

  // repost sends again, after a pause, the sends still waiting for their
  // ack: a POST lost on the way must not leave a message "sending" for good
  // (the server stores each id once). One timer for all of them, backing
  // off (1.5 s doubling to 30 s) while POSTs keep failing. Signals are not
  // worth it.
  var repostTimer = 0, repostDelay = 0;
  function repost() {
    if (repostTimer) return;
    repostDelay = Math.min(30000, repostDelay ? repostDelay * 2 : 1500);
    repostTimer = setTimeout(function () {
      repostTimer = 0;
      var again = S.pending.map(function (p) { return p.frame; }).filter(function (f) { return f && waiting(f); });
      if (!again.length) return;
      if (wsReady) again.forEach(function (f) { ws.send(JSON.stringify(f)); });
      else if (polling) post(again);
    }, repostDelay / 2 + Math.random() * repostDelay / 2);
  }
  // refuse marks the sends a refused POST carried as not sent (tap to retry).
  function refuse(frames) { frames.forEach(function (f) { var p = waiting(f); if (p) fail(p, L.failed); }); }

  // offline waits, then starts over: a session, the history, a connection.
  function offline() {
    stopPolling();
    if (ws) { var dead = ws; ws = null; wsReady = false; dead.close(); }
    setState("offline");
    setNotice(L.unavailable);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(boot, backoff());
  }

  var booted = false;
  function boot() {
    if (!booted) { booted = true; restoreOutbox(); }
    startSession(true)
      .then(function () { return loadHistory(false).catch(function (e) { console.warn("kefu:", e); }); })
      .then(connect, function (e) { console.warn("kefu:", e); offline(); });
  }

  // ---- wiring ----

  function autosize() {
    input.style.height = "auto";
    input.style.height = Math.min(120, input.scrollHeight) + "px";
  }
  input.addEventListener("input", onInput);
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) { // not while an IME composes
      e.preventDefault();
      submit();
    }
  });
  input.addEventListener("blur", stopTyping);
  fileInput.addEventListener("change", function () {
    Array.prototype.forEach.call(fileInput.files || [], sendFile);
    fileInput.value = "";
  });
  document.addEventListener("visibilitychange", function () {
    // Back to the tab with the panel open: what arrived meanwhile is in view.
    if (isOpen && !document.hidden && S.unread) { S.unread = 0; updateBadge(); }
    markRead();
  });

  function mount() {
    document.body.appendChild(host);
    if (attr("open") === "true") setOpen(true);
    boot();
  }

  window.KefuWidget = {
    open: function () { setOpen(true); },
    close: function () { setOpen(false); }
  };
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);
})();
