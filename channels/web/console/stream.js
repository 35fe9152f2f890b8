// The agent stream (docs/protocol.md): one cursor (the highest message id
// received) across every conversation, over a WebSocket, or over HTTP long
// polling when WebSockets fail. On reconnect the cursor makes the server
// replay what was missed, so nothing is lost between connections.
//
// Callbacks: onFrame(frame) for message, status, conversation, receipt and
// typing frames; onSynced() after each replay; onState(state) with
// "connecting", "live", "polling" or "offline"; onUnauthorized() when the
// server refuses the token (close 4001 or HTTP 401).

const BACKOFF_MIN = 500, BACKOFF_MAX = 30000;
// After this many WebSocket attempts in a row that never opened, switch to
// long polling; try the WebSocket again after WS_RETRY_MS of polling.
const WS_FAILURES_TO_POLL = 2, WS_RETRY_MS = 5 * 60 * 1000;

export class AgentStream {
  constructor(token, cb) {
    this.token = token;
    this.cb = cb;
    this.cursor = null; // null: from now
    this.ws = null;
    this.stopped = false;
    this.backoff = BACKOFF_MIN;
    this.wsFailures = 0;
    this.polling = false;
    this.pollAbort = null;
    this.timer = null;
  }

  start() { this.connect(); }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) { try { this.ws.close(1000); } catch (e) { /* closing */ } }
    if (this.pollAbort) this.pollAbort.abort();
  }

  state(s) { if (this.cb.onState) this.cb.onState(s); }

  connect() {
    if (this.stopped) return;
    if (this.polling) { this.poll(); return; }
    this.state("connecting");
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/agent";
    let ws;
    try { ws = new WebSocket(url); } catch (e) { this.failed(false); return; }
    this.ws = ws;
    let opened = false;
    // A connection that has heard nothing for two ping intervals is dead
    // (docs/protocol.md, Ping): a network path that went silent sends no
    // close. Drop it and resume at once.
    let lastRx = Date.now(), pingMs = 25000;
    const watch = setInterval(() => {
      if (this.ws !== ws) { clearInterval(watch); return; }
      if (Date.now() - lastRx <= 2 * pingMs + 5000) return;
      clearInterval(watch);
      ws.onclose = null;
      ws.onmessage = null;
      try { ws.close(); } catch (e) { /* closing */ }
      this.ws = null;
      if (!this.stopped) this.failed(opened, true);
    }, 5000);
    ws.onopen = () => {
      opened = true;
      const hello = { type: "hello", token: this.token };
      if (this.cursor !== null) hello.cursor = this.cursor;
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (ev) => {
      lastRx = Date.now();
      let f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      if (f.type === "welcome" && f.ping_interval_ms > 0) pingMs = f.ping_interval_ms;
      this.handle(f);
    };
    ws.onclose = (ev) => {
      clearInterval(watch);
      if (this.ws === ws) this.ws = null;
      if (this.stopped) return;
      if (ev.code === 4001) { this.cb.onUnauthorized(); return; }
      // Going away, silent or too slow: reconnect at once and resume.
      const quick = ev.code === 1001 || ev.code === 4002 || ev.code === 4008;
      this.failed(opened, quick);
    };
  }

  failed(opened, quick) {
    this.state("offline");
    if (opened) {
      this.wsFailures = 0;
    } else if (++this.wsFailures >= WS_FAILURES_TO_POLL) {
      this.polling = true;
      this.pollSince = Date.now();
    }
    const wait = quick ? 0 : this.backoff * (0.75 + Math.random() / 2);
    if (!quick) this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), wait);
  }

  handle(f) {
    switch (f.type) {
      case "welcome":
        this.backoff = BACKOFF_MIN;
        this.wsFailures = 0;
        break;
      case "synced":
        if (typeof f.cursor === "number") this.cursor = f.cursor;
        this.state("live");
        if (this.cb.onSynced) this.cb.onSynced();
        break;
      case "ping":
        this.send({ type: "pong" });
        break;
      case "pong":
        break;
      case "message":
        if (f.message && (this.cursor === null || f.message.id > this.cursor)) this.cursor = f.message.id;
        this.cb.onFrame(f);
        break;
      case "error":
        if (f.error && f.error.code === "unauthorized") this.cb.onUnauthorized();
        else this.cb.onFrame(f);
        break;
      default:
        this.cb.onFrame(f);
    }
  }

  // poll runs long polls until stopped, or until it is time to try the
  // WebSocket again.
  async poll() {
    this.state("connecting");
    let synced = false;
    if (this.cursor === null && this.cb.onSynced) {
      // A poll without a cursor waits for the next message: load the state
      // first, and poll from the newest message it holds (hint).
      synced = true;
      await this.cb.onSynced();
    }
    while (!this.stopped && this.polling) {
      if (Date.now() - this.pollSince > WS_RETRY_MS) {
        this.polling = false;
        this.wsFailures = 0;
        this.connect();
        return;
      }
      const ctl = new AbortController();
      this.pollAbort = ctl;
      let resp;
      try {
        const q = this.cursor !== null ? "?cursor=" + this.cursor : "";
        resp = await fetch("/lp/agent" + q, { headers: { Authorization: "Bearer " + this.token }, signal: ctl.signal, cache: "no-store" });
      } catch (e) {
        if (this.stopped) return;
        this.state("offline");
        await sleep(this.backoff);
        this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX);
        continue;
      }
      if (resp.status === 401) { this.cb.onUnauthorized(); return; }
      if (!resp.ok) {
        this.state("offline");
        const ra = parseInt(resp.headers.get("Retry-After") || "0", 10) * 1000;
        await sleep(Math.max(ra, this.backoff));
        this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX);
        continue;
      }
      this.backoff = BACKOFF_MIN;
      let body;
      try { body = await resp.json(); } catch (e) { continue; }
      for (const f of body.frames || []) this.handle(f);
      if (typeof body.cursor === "number") this.cursor = body.cursor;
      this.state("polling");
      if (!synced) {
        synced = true;
        if (this.cb.onSynced) this.cb.onSynced();
      }
    }
  }

  // hint sets the cursor, if there is none yet, to the newest message id
  // the console already holds: a long poll then resumes after it.
  hint(id) {
    if (this.cursor === null && typeof id === "number" && id > 0) this.cursor = id;
  }

  // send sends a frame (typing, receipt, pong) on whichever transport is up.
  send(f) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(f));
      return;
    }
    if (this.polling && f.type !== "pong") {
      fetch("/lp/agent", {
        method: "POST",
        headers: { Authorization: "Bearer " + this.token, "Content-Type": "application/json" },
        body: JSON.stringify(f),
      }).catch(() => {});
    }
  }
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }
