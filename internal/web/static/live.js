// Drover live updates. Pages are complete without this script; it follows
// running logs over server-sent events and, when the master's event stream
// says something changed, re-fetches the affected fragment of the page.
(() => {
  "use strict";
  const streams = new Map(); // <pre> element → its EventSource
  const userOpen = new Map(); // details id → open state the user chose
  const refreshes = new Map(); // fragment element id → {timer, last}
  const minGap = 1000; // refresh a fragment at most once a second

  // follow appends a running log's new bytes to its <pre>, starting at the
  // offset where the server-rendered text ended.
  function follow(pre, attempt = 0) {
    if (!pre.dataset.stream || streams.has(pre)) return;
    const es = new EventSource(pre.dataset.stream + "?offset=" + encodeURIComponent(pre.dataset.offset || "0"));
    streams.set(pre, es);
    es.addEventListener("open", () => { attempt = 0; });
    es.addEventListener("data", (e) => {
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.append(JSON.parse(e.data));
      if (e.lastEventId) pre.dataset.offset = e.lastEventId;
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    });
    es.addEventListener("end", () => { stop(pre); delete pre.dataset.stream; });
    es.onerror = () => {
      // Reconnect from the offset reached so far; the browser's own retry
      // would replay the URL's original offset.
      stop(pre);
      const wait = Math.min(30000, 1000 * 2 ** attempt);
      setTimeout(() => { if (pre.isConnected) follow(pre, attempt + 1); }, wait);
    };
  }

  function stop(pre) {
    streams.get(pre)?.close();
    streams.delete(pre);
  }

  // followAll drops streams of logs no longer on the page and starts those
  // of logs that appeared.
  function followAll() {
    for (const pre of [...streams.keys()]) if (!pre.isConnected) stop(pre);
    document.querySelectorAll("pre[data-stream]").forEach((pre) => follow(pre));
  }

  function matches(el, ev) {
    if (ev.type === "lagged") return true;
    if (!(el.dataset.events || "").split(" ").includes(ev.type)) return false;
    const d = el.dataset;
    if (d.build && String(ev.build_id) !== d.build) return false;
    if (d.builder && ev.builder && ev.builder !== d.builder) return false;
    if (d.worker && ev.worker && ev.worker !== d.worker) return false;
    return true;
  }

  function schedule(el) {
    if (!el.id) return;
    const st = refreshes.get(el.id) || { timer: 0, last: 0, again: false };
    refreshes.set(el.id, st);
    // A refresh already planned or in flight may read the state from before
    // this event: mark it so another follows, or the last change is lost.
    if (st.timer) { st.again = true; return; }
    st.again = false;
    st.timer = setTimeout(() => refresh(el.id, st), Math.max(50, st.last + minGap - Date.now()));
  }

  async function refresh(id, st) {
    st.last = Date.now();
    const el = document.getElementById(id);
    try {
      if (el) {
        const name = el.dataset.fragment;
        const url = new URL(location.href);
        url.hash = "";
        url.searchParams.set("fragment", name);
        const resp = await fetch(url, { headers: { "X-Fragment": name }, cache: "no-store" });
        if (resp.ok) swap(el, await resp.text());
      }
    } catch (err) { // the next event, or the reconnect, refreshes again
    } finally {
      st.timer = 0;
      const el = document.getElementById(id);
      if (st.again && el) schedule(el);
    }
  }

  function swap(el, html) {
    el.innerHTML = html;
    el.querySelectorAll("details[id]").forEach((d) => {
      if (userOpen.has(d.id)) d.open = userOpen.get(d.id);
    });
    el.querySelectorAll("pre[data-stream]").forEach((pre) => { pre.scrollTop = pre.scrollHeight; });
    updateTimes(el);
    followAll();
  }

  // Remember what the user opened or closed, so refreshes keep it.
  document.addEventListener("click", (e) => {
    const s = e.target.closest("details[id] > summary");
    if (s) userOpen.set(s.parentElement.id, !s.parentElement.open);
  });

  function listen() {
    if (!document.querySelector("[data-fragment]")) return;
    const dot = document.getElementById("live-status");
    const es = new EventSource("/api/v1/events");
    const onEvent = (e) => {
      let ev;
      try { ev = JSON.parse(e.data); } catch (err) { ev = {}; }
      ev.type = ev.type || e.type;
      document.querySelectorAll("[data-fragment]").forEach((el) => { if (matches(el, ev)) schedule(el); });
    };
    ["build.started", "build.finished", "step.started", "step.updated", "step.finished", "request.added", "request.changed",
      "worker.changed", "change.added", "config.loaded", "lagged"].forEach((t) => es.addEventListener(t, onEvent));
    es.onmessage = onEvent;
    es.onopen = () => {
      if (dot) { dot.hidden = false; dot.classList.remove("down"); dot.title = "Live"; }
      // Events may have been missed while disconnected, or between the
      // page's render and this subscription: look again.
      document.querySelectorAll("[data-fragment]").forEach(schedule);
    };
    es.onerror = () => {
      if (dot) { dot.classList.add("down"); dot.title = "Live updates reconnecting…"; }
    };
  }

  // ago mirrors the server's wording, so times stay current without reload.
  function ago(t) {
    const s = (Date.now() - t.getTime()) / 1000;
    if (s < -60) return "in " + rough(-s);
    if (s < 10) return "just now";
    if (s > 30 * 86400) return t.toISOString().slice(0, 10);
    return rough(s) + " ago";
  }
  function rough(s) {
    if (s < 60) return Math.floor(s) + "s";
    if (s < 3600) return Math.floor(s / 60) + "m";
    if (s < 48 * 3600) return Math.floor(s / 3600) + "h";
    return Math.floor(s / 86400) + "d";
  }
  function updateTimes(root) {
    root.querySelectorAll("time[data-rel]").forEach((el) => {
      const t = new Date(el.dateTime);
      if (!isNaN(t)) el.textContent = ago(t);
    });
  }

  // say shows text in a status element, or hides the element when empty.
  const say = (el, text) => { if (el) { el.textContent = text; el.hidden = !text; } };

  // postWithToken sends a write to the API with a token typed into a page
  // form. The page never stores it: the web UI has no session, so no other
  // site can act with it. It resolves to the reply, or throws an Error with
  // the API's own message (a refused config's carries its file:line errors).
  async function postWithToken(path, token, body) {
    const headers = { "Authorization": "Bearer " + token, "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let resp;
    try {
      resp = await fetch(path, { method: "POST", headers, body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store", credentials: "omit" });
    } catch (err) {
      throw new Error("Cannot reach the master: " + err.message);
    }
    let reply = null;
    try { reply = await resp.json(); } catch (err) { /* not JSON */ }
    if (!resp.ok) throw new Error((reply && reply.error) || (resp.status + " " + resp.statusText));
    return reply;
  }

  // tokenAction wires a form (by id) whose write needs a token: on a click
  // of a matching button, or on submit, act(button, token) runs, and its
  // result or error is shown in the form's -done or -error element.
  // Clicks are caught on the document, so buttons in a refreshed fragment
  // work too.
  function tokenAction(id, role, selector, act, after) {
    const form = document.getElementById(id + "-form");
    if (!form) return;
    const errEl = document.getElementById(id + "-error");
    const doneEl = document.getElementById(id + "-done");
    form.hidden = false;
    const run = async (button) => {
      say(errEl, "");
      say(doneEl, "");
      const token = form.elements.token.value.trim();
      if (!token) { say(errEl, "An API token with the " + role + " role is needed."); return; }
      button.disabled = true;
      try {
        say(doneEl, await act(form, button, token));
      } catch (err) {
        say(errEl, err.message);
      } finally {
        button.disabled = false;
        if (after) after();
      }
    };
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (!selector) run(form.querySelector("button[type=submit]"));
    });
    if (selector) {
      document.addEventListener("click", (e) => {
        const button = e.target.closest(selector);
        if (button) run(button);
      });
    }
  }

  const refreshOn = (event) => () =>
    document.querySelectorAll('[data-fragment][data-events~="' + event + '"]').forEach(schedule);

  // The worker page's availability form (operator).
  tokenAction("avail", "operator", null, async (form, button, token) => {
    const state = form.elements.availability.value;
    await postWithToken("/api/v1/workers/" + encodeURIComponent(form.dataset.worker) + "/availability", token,
      { availability: state, reason: form.elements.reason.value });
    form.elements.reason.value = "";
    refreshOn("worker.changed")();
    return state === "auto" ? "Cleared: the worker's own availability applies." : "Set to " + state + ".";
  });

  // The workers page's Approve and Reject buttons (admin).
  tokenAction("approval", "admin", "button[data-approval]", async (form, button, token) => {
    const verb = button.dataset.approval;
    const name = button.dataset.worker;
    await postWithToken("/api/v1/workers/" + encodeURIComponent(name) + "/" + verb, token);
    refreshOn("worker.changed")();
    return (verb === "approve" ? "Approved " : "Rejected ") + name + ".";
  });

  // The admin page's Reload config (admin). Either way the config status
  // is refreshed: a refusal publishes no event but changes it.
  tokenAction("reload", "admin", null, async (form, button, token) => {
    const reply = await postWithToken("/api/v1/config/reload", token);
    const hash = (reply && reply.hash) ? String(reply.hash).slice(0, 12) : "?";
    const n = reply ? reply.builders : "?";
    return "Config reloaded: hash " + hash + ", " + n + (n === 1 ? " builder." : " builders.");
  }, refreshOn("config.loaded"));

  document.documentElement.classList.add("js");
  followAll();
  listen();
  setInterval(() => updateTimes(document), 30000);
})();
