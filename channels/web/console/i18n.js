// Console strings in English and Chinese. The language is the browser's
// (navigator.languages) unless the agent picked one, which is kept in
// localStorage. t() fills {name} placeholders; the result is always put in
// the page as text.

const STRINGS = {
  en: {
    "lang.switch": "中文",
    "login.subtitle": "Agent console",
    "login.email": "Email",
    "login.password": "Password",
    "login.submit": "Log in",
    "login.wrong": "Wrong email or password.",
    "login.throttled": "Too many attempts. Try again in {s} s.",
    "top.agents": "Agents",
    "top.password": "Password",
    "top.logout": "Log out",
    "avail.available": "Available",
    "avail.away": "Away",
    "avail.offline": "Offline",
    "avail.titleAvailable": "You get new conversations. Click to go away.",
    "avail.titleAway": "You get no new conversations. Click to be available.",
    "conn.connecting": "connecting…",
    "conn.live": "",
    "conn.polling": "live (long polling)",
    "conn.offline": "offline, reconnecting…",
    "filter.mine": "Mine",
    "filter.unassigned": "Unassigned",
    "filter.queued": "Queued",
    "filter.open": "All open",
    "filter.resolved": "Resolved",
    "list.empty": "No conversations here.",
    "list.more": "Load more",
    "list.visitor": "Visitor {id}",
    "list.unassigned": "unassigned",
    "list.noMessages": "No messages yet",
    "list.image": "[image]",
    "list.file": "[file]",
    "list.template": "[template {name}]",
    "list.note": "Note: {text}",
    "status.pending": "queued",
    "status.open": "open",
    "status.resolved": "resolved",
    "conv.none": "Pick a conversation on the left.",
    "conv.meta": "{number} · {channel} · {status} · {assignee}",
    "conv.assignedTo": "assigned to {name}",
    "act.take": "Take",
    "act.assign": "Assign",
    "act.transfer": "Transfer",
    "act.close": "Close",
    "act.reopen": "Reopen",
    "act.toQueue": "Back to the queue",
    "act.pickAgent": "Agent…",
    "window.closed": "The reply window of this {channel} conversation closed {when}. The customer must write first; until then only a template reaches them.",
    "window.closedNoTemplate": "The reply window of this {channel} conversation closed {when}. The customer must write first.",
    "window.closing": "The reply window closes {when} ({min} min left).",
    "window.sendTemplate": "Send template",
    "msg.older": "Load older messages",
    "msg.note": "Internal note",
    "msg.bot": "Automatic reply",
    "msg.customer": "Customer",
    "msg.download": "Download",
    "msg.resend": "Resend",
    "msg.failed": "Not delivered: {reason}",
    "msg.template": "Template “{name}”",
    "msg.status.pending": "sending",
    "msg.status.sent": "sent",
    "msg.status.delivered": "delivered",
    "msg.status.read": "read",
    "msg.status.failed": "failed",
    "ev.assigned": "Assigned to {agent}",
    "ev.assignedBy": "{by} assigned it to {agent}",
    "ev.took": "{agent} took the conversation",
    "ev.transferred": "Transferred from {from} to {agent}",
    "ev.unassigned": "Back to the queue",
    "ev.resolved": "Closed by {by}",
    "ev.resolvedAuto": "Closed",
    "ev.reopened": "Reopened by {by}",
    "ev.reopenedByCustomer": "Reopened: the customer wrote again",
    "ev.deliveryFailed": "{agent}'s reply was not delivered to the customer: {reason}",
    "ev.deliveryFailedBot": "An automatic reply was not delivered to the customer: {reason}",
    "typing.customer": "The customer is typing…",
    "typing.agent": "{name} is typing…",
    "composer.reply": "Reply",
    "composer.note": "Note (agents only)",
    "composer.attach": "Attach a file",
    "composer.hint": "Enter sends, Shift+Enter adds a line",
    "composer.send": "Send",
    "composer.placeholderReply": "Write to the customer…",
    "composer.placeholderNote": "Write a note only agents see…",
    "composer.uploading": "Uploading {name}…",
    "agents.title": "Agents",
    "agents.name": "Name",
    "agents.email": "Email",
    "agents.role": "Role",
    "agents.state": "State",
    "agents.create": "New agent",
    "agents.createButton": "Create",
    "agents.initialPassword": "Initial password (8+)",
    "agents.deactivate": "Deactivate",
    "agents.activate": "Activate",
    "agents.resetPassword": "Reset password",
    "agents.newPassword": "New password (8+)",
    "agents.set": "Set",
    "agents.inactive": "deactivated",
    "agents.created": "Agent {name} created.",
    "agents.passwordReset": "Password of {name} reset.",
    "agents.links": "Answers from",
    "agents.link": "Link channels",
    "agents.wecomUserID": "Work WeChat UserID",
    "agents.slackUser": "Slack user ID (U…)",
    "agents.save": "Save",
    "agents.viaWecom": "Work WeChat: {id}",
    "agents.viaSlack": "Slack: {id}",
    "agents.linksSaved": "Channels of {name} saved.",
    "role.agent": "agent",
    "role.admin": "admin",
    "password.title": "Change your password",
    "password.current": "Current password",
    "password.new": "New password (8+)",
    "password.change": "Change",
    "password.changed": "Password changed.",
    "common.close": "Close",
    "common.someone": "someone",
    "common.you": "you",
    "error.generic": "Something went wrong: {message}",
    "error.network": "The server cannot be reached. Retrying…",
    "error.tooLarge": "The file is too large.",
    "error.type": "This type of file cannot be sent.",
  },
  zh: {
    "lang.switch": "English",
    "login.subtitle": "客服工作台",
    "login.email": "邮箱",
    "login.password": "密码",
    "login.submit": "登录",
    "login.wrong": "邮箱或密码错误。",
    "login.throttled": "尝试次数过多，请 {s} 秒后再试。",
    "top.agents": "客服管理",
    "top.password": "修改密码",
    "top.logout": "退出",
    "avail.available": "在线",
    "avail.away": "离开",
    "avail.offline": "离线",
    "avail.titleAvailable": "新会话会分配给你。点击设为离开。",
    "avail.titleAway": "不再分配新会话。点击恢复在线。",
    "conn.connecting": "连接中…",
    "conn.live": "",
    "conn.polling": "已连接（长轮询）",
    "conn.offline": "连接断开，正在重连…",
    "filter.mine": "我的",
    "filter.unassigned": "未分配",
    "filter.queued": "排队中",
    "filter.open": "全部进行中",
    "filter.resolved": "已结束",
    "list.empty": "这里没有会话。",
    "list.more": "加载更多",
    "list.visitor": "访客 {id}",
    "list.unassigned": "未分配",
    "list.noMessages": "还没有消息",
    "list.image": "[图片]",
    "list.file": "[文件]",
    "list.template": "[模板 {name}]",
    "list.note": "备注：{text}",
    "status.pending": "排队中",
    "status.open": "进行中",
    "status.resolved": "已结束",
    "conv.none": "请在左侧选择一个会话。",
    "conv.meta": "{number} · {channel} · {status} · {assignee}",
    "conv.assignedTo": "由 {name} 负责",
    "act.take": "接入",
    "act.assign": "分配",
    "act.transfer": "转接",
    "act.close": "结束",
    "act.reopen": "重新打开",
    "act.toQueue": "退回队列",
    "act.pickAgent": "选择客服…",
    "window.closed": "此 {channel} 会话的回复窗口已于 {when} 关闭。客户再次发言前，只能发送模板消息。",
    "window.closedNoTemplate": "此 {channel} 会话的回复窗口已于 {when} 关闭。需等客户再次发言。",
    "window.closing": "回复窗口将于 {when} 关闭（剩余 {min} 分钟）。",
    "window.sendTemplate": "发送模板",
    "msg.older": "加载更早的消息",
    "msg.note": "内部备注",
    "msg.bot": "自动回复",
    "msg.customer": "客户",
    "msg.download": "下载",
    "msg.resend": "重新发送",
    "msg.failed": "发送失败：{reason}",
    "msg.template": "模板「{name}」",
    "msg.status.pending": "发送中",
    "msg.status.sent": "已发送",
    "msg.status.delivered": "已送达",
    "msg.status.read": "已读",
    "msg.status.failed": "失败",
    "ev.assigned": "已分配给 {agent}",
    "ev.assignedBy": "{by} 将会话分配给 {agent}",
    "ev.took": "{agent} 接入了会话",
    "ev.transferred": "已从 {from} 转接给 {agent}",
    "ev.unassigned": "已退回队列",
    "ev.resolved": "{by} 结束了会话",
    "ev.resolvedAuto": "会话已结束",
    "ev.reopened": "{by} 重新打开了会话",
    "ev.reopenedByCustomer": "客户再次发言，会话已重新打开",
    "ev.deliveryFailed": "{agent} 的回复未能送达客户：{reason}",
    "ev.deliveryFailedBot": "自动回复未能送达客户：{reason}",
    "typing.customer": "客户正在输入…",
    "typing.agent": "{name} 正在输入…",
    "composer.reply": "回复",
    "composer.note": "备注（仅客服可见）",
    "composer.attach": "添加文件",
    "composer.hint": "Enter 发送，Shift+Enter 换行",
    "composer.send": "发送",
    "composer.placeholderReply": "回复客户…",
    "composer.placeholderNote": "写一条只有客服能看到的备注…",
    "composer.uploading": "正在上传 {name}…",
    "agents.title": "客服管理",
    "agents.name": "姓名",
    "agents.email": "邮箱",
    "agents.role": "角色",
    "agents.state": "状态",
    "agents.create": "新建客服",
    "agents.createButton": "创建",
    "agents.initialPassword": "初始密码（至少 8 位）",
    "agents.deactivate": "停用",
    "agents.activate": "启用",
    "agents.resetPassword": "重置密码",
    "agents.newPassword": "新密码（至少 8 位）",
    "agents.set": "设置",
    "agents.inactive": "已停用",
    "agents.created": "已创建客服 {name}。",
    "agents.passwordReset": "已重置 {name} 的密码。",
    "agents.links": "回复渠道",
    "agents.link": "绑定渠道",
    "agents.wecomUserID": "企业微信 UserID",
    "agents.slackUser": "Slack 用户 ID（U…）",
    "agents.save": "保存",
    "agents.viaWecom": "企业微信：{id}",
    "agents.viaSlack": "Slack：{id}",
    "agents.linksSaved": "已保存 {name} 的回复渠道。",
    "role.agent": "客服",
    "role.admin": "管理员",
    "password.title": "修改密码",
    "password.current": "当前密码",
    "password.new": "新密码（至少 8 位）",
    "password.change": "修改",
    "password.changed": "密码已修改。",
    "common.close": "关闭",
    "common.someone": "某人",
    "common.you": "你",
    "error.generic": "出错了：{message}",
    "error.network": "无法连接服务器，正在重试…",
    "error.tooLarge": "文件太大。",
    "error.type": "不支持发送此类文件。",
  },
};

const KEY = "kefu.console.lang";

function browserLang() {
  const langs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
  for (const l of langs) {
    const s = String(l).toLowerCase();
    if (s.startsWith("zh")) return "zh";
    if (s.startsWith("en")) return "en";
  }
  return "en";
}

let lang = (() => {
  try {
    const saved = localStorage.getItem(KEY);
    if (saved && STRINGS[saved]) return saved;
  } catch (e) { /* storage disabled */ }
  return browserLang();
})();

export function currentLang() { return lang; }

export function setLang(l) {
  if (!STRINGS[l]) return;
  lang = l;
  try { localStorage.setItem(KEY, l); } catch (e) { /* storage disabled */ }
}

export function toggleLang() { setLang(lang === "zh" ? "en" : "zh"); }

// t returns the string for key in the current language with {name}
// placeholders filled from vars (as text).
export function t(key, vars) {
  const s = (STRINGS[lang] && STRINGS[lang][key]) ?? STRINGS.en[key] ?? key;
  if (!vars) return s;
  return s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
}

// applyStatic fills the elements marked with data-i18n (text) and
// data-i18n-placeholder under root.
export function applyStatic(root) {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll(".lang-toggle")) el.textContent = t("lang.switch");
}

export function formatTime(iso, withDate) {
  const d = new Date(iso);
  if (isNaN(d)) return "";
  const sameDay = new Date().toDateString() === d.toDateString();
  const opts = sameDay && !withDate ? { hour: "2-digit", minute: "2-digit" }
    : { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" };
  return new Intl.DateTimeFormat(lang === "zh" ? "zh-CN" : "en", opts).format(d);
}

export function formatSize(n) {
  if (n < 1024) return n + " B";
  if (n < 1024 * 1024) return (n / 1024).toFixed(0) + " KB";
  return (n / 1024 / 1024).toFixed(1) + " MB";
}
