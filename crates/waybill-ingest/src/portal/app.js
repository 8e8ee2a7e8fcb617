// Waybill's subscriber portal: one tenant's webhooks, through the /v1 API
// of the service that served this page, with the session's token. No
// framework, nothing fetched from elsewhere; every text is set as text.
"use strict";

(function () {
  const TOKEN_KEY = "waybill.portal.token";
  const main = document.getElementById("main");
  const statusBox = document.getElementById("status");

  // The token arrives after `#` (never sent to a server) and is kept for
  // this tab only; a new session link opened in the same tab replaces it.
  function adoptToken() {
    const match = /^#token=([^&]+)/.exec(location.hash);
    if (match) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
      history.replaceState(null, "", location.pathname + "#/subscriptions");
    }
  }
  adoptToken();
  const token = () => sessionStorage.getItem(TOKEN_KEY);

  // ---- small helpers ------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "text") el.textContent = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function show(...nodes) {
    main.replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined && n !== false));
  }

  function say(message, isError) {
    statusBox.textContent = message || "";
    statusBox.className = isError ? "error" : "";
  }

  function when(t) {
    if (!t) return "–";
    const d = new Date(t);
    return isNaN(d) ? t : d.toLocaleString();
  }

  // An RFC 3339 time as a datetime-local input's value ("" if none).
  function localInput(t) {
    const d = t ? new Date(t) : null;
    if (!d || isNaN(d)) return "";
    d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
    return d.toISOString().slice(0, 16);
  }

  function badge(status) {
    return h("span", { class: "badge " + status, text: status });
  }

  // Calls the API; answers {ok, status, body, etag}. A failure is said in
  // the status region unless the caller handles it (quiet).
  async function api(method, path, body, opts) {
    opts = opts || {};
    const headers = { Authorization: "Bearer " + token() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (opts.ifMatch !== undefined) headers["If-Match"] = '"' + opts.ifMatch + '"';
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      say("The service did not answer (" + e.message + "); try again.", true);
      return { ok: false, status: 0, body: null };
    }
    let json = null;
    if (response.status !== 204) {
      try { json = await response.json(); } catch (_) { json = null; }
    }
    const out = { ok: response.ok, status: response.status, body: json, etag: response.headers.get("ETag") };
    if (!out.ok && !opts.quiet) say(errorText(out), true);
    return out;
  }

  function errorText(answer) {
    const e = answer.body && answer.body.error;
    if (!e) return "The request failed (HTTP " + answer.status + ").";
    return e.message + " (" + e.code + ")";
  }

  function qs(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== "" && v != null) q.set(k, v);
    const s = q.toString();
    return s ? "?" + s : "";
  }

  // ---- routing ------------------------------------------------------------

  const routes = [
    [/^#\/subscriptions$/, subscriptionList],
    [/^#\/subscriptions\/new$/, () => subscriptionForm(null)],
    [/^#\/subscriptions\/([^/]+)\/edit$/, (id) => subscriptionForm(id)],
    [/^#\/subscriptions\/([^/]+)$/, subscriptionDetail],
    [/^#\/deliveries(\?.*)?$/, deliveryList],
    [/^#\/deliveries\/([^/?]+)$/, deliveryDetail],
    [/^#\/events$/, eventCatalog],
  ];

  async function route() {
    adoptToken();
    if (!token()) {
      say("No session: open the portal from the platform's link.", true);
      show(h("p", { text: "This page needs a session link." }));
      return;
    }
    const hash = location.hash || "#/subscriptions";
    for (const a of document.querySelectorAll("[data-nav]")) {
      const current = hash.startsWith("#/" + a.dataset.nav);
      if (current) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    for (const [pattern, view] of routes) {
      const m = pattern.exec(hash);
      if (m) {
        say("");
        show(h("p", { class: "muted", text: "Loading…" }));
        await view(m[1] && decodeURIComponent(m[1]));
        main.focus();
        return;
      }
    }
    location.hash = "#/subscriptions";
  }

  window.addEventListener("hashchange", route);
  document.addEventListener("DOMContentLoaded", route);

  // ---- subscriptions ------------------------------------------------------

  async function subscriptionList() {
    const answer = await api("GET", "/v1/subscriptions?limit=200");
    if (!answer.ok) return show(h("p", { text: "Subscriptions could not be read." }));
    const subs = answer.body.subscriptions;
    const rows = subs.map((s) =>
      h("tr", {},
        h("td", { "data-label": "Name" }, h("a", { href: "#/subscriptions/" + encodeURIComponent(s.id), text: s.name || s.id })),
        h("td", { "data-label": "URL", class: "wrap mono", text: s.url }),
        h("td", { "data-label": "Events", text: s.event_types.join(", ") }),
        h("td", { "data-label": "Status" }, badge(s.status)),
        h("td", { "data-label": "Failing since", text: s.failing_since ? when(s.failing_since) : "–" })));
    show(
      h("h2", { text: "Subscriptions" }),
      h("div", { class: "actions" }, h("a", { class: "button primary", href: "#/subscriptions/new", text: "New subscription" })),
      subs.length === 0
        ? h("p", { class: "muted", text: "No subscription yet." })
        : h("table", { class: "responsive" },
            h("thead", {}, h("tr", {}, ["Name", "URL", "Events", "Status", "Failing since"].map((t) => h("th", { scope: "col", text: t })))),
            h("tbody", {}, rows)));
  }

  const FORM_FIELDS = [
    ["name", "Name", "text", "Shown in this portal only."],
    ["url", "URL", "url", "Where events are sent (https)."],
    ["event_types", "Event types", "textarea", "One per line: a name from the catalog, or a pattern such as freights.*"],
    ["ordering", "Order", "select", "entity: one entity's events in order; strict: also through retries; none: no order, fastest."],
    ["max_in_flight", "Requests in flight at most", "number", "1 to 64 (default 8)."],
    ["rate_limit_per_second", "Requests per second at most", "number", "Leave empty for no limit."],
  ];

  async function subscriptionForm(id) {
    let current = null;
    if (id) {
      const answer = await api("GET", "/v1/subscriptions/" + encodeURIComponent(id));
      if (!answer.ok) return show(h("p", { text: "This subscription could not be read." }));
      current = answer.body;
    }
    const catalog = await api("GET", "/v1/event_types", undefined, { quiet: true });
    const names = catalog.ok ? catalog.body.event_types.map((e) => e.name) : [];
    const inputs = {};
    const errors = {};
    const fields = FORM_FIELDS.map(([name, label, type, hint]) => {
      const inputId = "f-" + name;
      let input;
      if (type === "textarea") {
        input = h("textarea", { id: inputId, name, "aria-describedby": inputId + "-hint " + inputId + "-error" });
        input.value = current ? current.event_types.join("\n") : "";
      } else if (type === "select") {
        input = h("select", { id: inputId, name, "aria-describedby": inputId + "-hint " + inputId + "-error" },
          ["entity", "strict", "none"].map((o) => h("option", { value: o, text: o })));
        input.value = current ? current.ordering : "entity";
      } else {
        input = h("input", { id: inputId, name, type, "aria-describedby": inputId + "-hint " + inputId + "-error" });
        const v = current && current[name];
        input.value = v === null || v === undefined ? "" : v;
        if (name === "url") input.required = true;
      }
      inputs[name] = input;
      errors[name] = h("p", { id: inputId + "-error", class: "field-error" });
      return h("div", {}, h("label", { for: inputId, text: label }), input,
        h("p", { id: inputId + "-hint", class: "hint", text: hint }), errors[name]);
    });
    const submit = h("button", { type: "submit", class: "primary", text: id ? "Save" : "Create" });
    const form = h("form", { novalidate: true, onsubmit: save }, fields,
      h("div", { class: "actions" }, submit,
        h("a", { class: "button", href: id ? "#/subscriptions/" + encodeURIComponent(id) : "#/subscriptions", text: "Cancel" })));
    show(h("h2", { text: id ? "Edit " + (current.name || current.id) : "New subscription" }),
      form,
      names.length
        ? h("details", {}, h("summary", { text: "Event types in the catalog" }),
            h("ul", { class: "mono" }, names.map((n) => h("li", { text: n }))))
        : null);

    async function save(event) {
      event.preventDefault();
      for (const [name, el] of Object.entries(errors)) {
        el.textContent = "";
        inputs[name].removeAttribute("aria-invalid");
      }
      const number = (v) => (v.trim() === "" ? null : Number(v));
      const body = {
        name: inputs.name.value,
        url: inputs.url.value.trim(),
        event_types: inputs.event_types.value.split(/[\n,]/).map((s) => s.trim()).filter(Boolean),
        ordering: inputs.ordering.value,
        max_in_flight: number(inputs.max_in_flight.value),
        rate_limit_per_second: number(inputs.rate_limit_per_second.value),
      };
      submit.disabled = true;
      say(id ? "Saving…" : "Creating…");
      const answer = id
        ? await api("PATCH", "/v1/subscriptions/" + encodeURIComponent(id), body, { quiet: true, ifMatch: current.revision })
        : await api("POST", "/v1/subscriptions", body, { quiet: true });
      submit.disabled = false;
      if (answer.ok) {
        say(id ? "Saved." : "Created.");
        location.hash = "#/subscriptions/" + encodeURIComponent(answer.body.id);
        return;
      }
      const details = (answer.body && answer.body.error && answer.body.error.details) || [];
      let first = null;
      const other = [];
      for (const d of details) {
        const name = d.field.split(/[.[]/)[0];
        if (errors[name]) {
          errors[name].textContent = (errors[name].textContent ? errors[name].textContent + " " : "") + d.message;
          inputs[name].setAttribute("aria-invalid", "true");
          first = first || inputs[name];
        } else {
          other.push(d.field + ": " + d.message);
        }
      }
      say(errorText(answer) + (other.length ? " " + other.join("; ") : ""), true);
      if (first) first.focus();
    }
  }

  async function subscriptionDetail(id) {
    const path = "/v1/subscriptions/" + encodeURIComponent(id);
    const answer = await api("GET", path);
    if (!answer.ok) return show(h("p", { text: "This subscription could not be read." }));
    const s = answer.body;
    const act = (label, method, suffix, opts) =>
      h("button", {
        type: "button", class: (opts && opts.danger) ? "danger" : null, text: label,
        onclick: async (e) => {
          if (opts && opts.confirm && !confirm(opts.confirm)) return;
          e.target.disabled = true;
          say(label + "…");
          const r = await api(method, path + suffix, opts && opts.body, { ifMatch: s.revision });
          e.target.disabled = false;
          if (!r.ok) return;
          if (opts && opts.after) return opts.after(r);
          say(label + ": done.");
          subscriptionDetail(id);
        },
      });
    const secret = h("span", { class: "mono", id: "secret", text: "hidden" });
    const testResult = h("p", { id: "test-result", class: "muted" });
    const replayProgress = h("p", { id: "replay-progress", role: "status", class: "muted" });
    const since = h("input", { id: "replay-since", type: "datetime-local" });
    const until = h("input", { id: "replay-until", type: "datetime-local" });
    const onlyFailed = h("input", { id: "replay-only-failed", type: "checkbox" });
    show(
      h("h2", { text: s.name || s.id }),
      h("dl", {},
        h("dt", { text: "Status" }), h("dd", {}, badge(s.status), s.disabled_reason ? " " + s.disabled_reason : ""),
        h("dt", { text: "Failing since" }), h("dd", { text: s.failing_since ? when(s.failing_since) : "–" }),
        h("dt", { text: "URL" }), h("dd", { class: "mono", text: s.method + " " + s.url }),
        h("dt", { text: "Event types" }), h("dd", { text: s.event_types.join(", ") }),
        h("dt", { text: "Order" }), h("dd", { text: s.ordering + ", at most " + s.max_in_flight + " in flight" }),
        h("dt", { text: "Id" }), h("dd", { class: "mono", text: s.id }),
        h("dt", { text: "Updated" }), h("dd", { text: when(s.updated_at) + " (revision " + s.revision + ")" })),
      h("div", { class: "actions" },
        h("a", { class: "button", href: "#/subscriptions/" + encodeURIComponent(id) + "/edit", text: "Edit" }),
        s.enabled
          ? act("Disable", "PATCH", "", { body: { enabled: false } })
          : act("Enable", "PATCH", "", { body: { enabled: true } }),
        s.status === "paused" ? act("Resume", "POST", "/resume") : act("Pause", "POST", "/pause"),
        h("button", {
          type: "button", text: "Send test event",
          onclick: async () => {
            const r = await api("POST", path + "/test", {});
            if (!r.ok) return;
            testResult.textContent = "Test event queued (" + r.body.delivery_id + ").";
            watchDelivery(r.body.delivery_id, testResult);
          },
        }),
        h("a", { class: "button", href: "#/deliveries?subscription_id=" + encodeURIComponent(id), text: "Deliveries" }),
        act("Delete", "DELETE", "", {
          danger: true,
          confirm: "Delete this subscription? Nothing more is delivered to it.",
          after: () => { say("Deleted."); location.hash = "#/subscriptions"; },
        })),
      testResult,
      h("h3", { text: "Signing secret" }),
      h("div", { class: "secret" }, secret,
        h("button", {
          type: "button", text: "Reveal",
          onclick: async () => {
            const r = await api("GET", path + "/secret");
            if (r.ok) secret.textContent = r.body.signing_secret;
          },
        }),
        act("Rotate", "POST", "/secret/rotate", {
          confirm: "Rotate the signing secret? The previous one keeps signing for a while.",
          after: async (r) => {
            secret.textContent = r.body.signing_secret || "rotated";
            // The rotation is a change: later ones name the new revision.
            const fresh = await api("GET", path, undefined, { quiet: true });
            if (fresh.ok) s.revision = fresh.body.revision;
            say("Secret rotated; the previous one signs too until " + when(r.body.previous_secret_expires_at) + ".");
          },
        })),
      h("h3", { text: "Replay a window" }),
      h("form", {
        onsubmit: async (e) => {
          e.preventDefault();
          if (!since.value) { say("Say since when to replay.", true); since.focus(); return; }
          const body = { since: new Date(since.value).toISOString(), only_failed: onlyFailed.checked };
          if (until.value) body.until = new Date(until.value).toISOString();
          const r = await api("POST", path + "/replay", body);
          if (r.ok) watchReplay(r.body.status_url, replayProgress);
        },
      },
        h("div", {}, h("label", { for: "replay-since", text: "Since" }), since),
        h("div", {}, h("label", { for: "replay-until", text: "Until (empty: now)" }), until),
        h("div", {}, h("label", { for: "replay-only-failed" }, onlyFailed, " Only deliveries that failed")),
        h("div", { class: "actions" }, h("button", { type: "submit", text: "Replay" }))),
      replayProgress);
  }

  async function watchDelivery(deliveryId, out) {
    for (let i = 0; i < 60; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      const r = await api("GET", "/v1/deliveries/" + encodeURIComponent(deliveryId), undefined, { quiet: true });
      if (!r.ok) continue;
      out.replaceChildren("Test delivery: ", badge(r.body.status), " ",
        h("a", { href: "#/deliveries/" + encodeURIComponent(deliveryId), text: "details" }));
      if (r.body.status !== "pending") return;
    }
  }

  async function watchReplay(statusUrl, out) {
    for (;;) {
      const r = await api("GET", statusUrl, undefined, { quiet: true });
      if (r.ok) {
        const j = r.body;
        out.textContent = "Replay " + j.status + ": " + j.scanned + " events read, " + j.queued + " deliveries queued" +
          (j.error ? " — " + j.error : "") + ".";
        if (j.status !== "running" && j.status !== "pending") return;
      } else {
        out.textContent = "Replay progress unknown: " + errorText(r);
      }
      await new Promise((res) => setTimeout(res, 1000));
    }
  }

  // ---- deliveries ---------------------------------------------------------

  async function deliveryList(query) {
    const params = new URLSearchParams((query || "").replace(/^\?/, ""));
    const subs = await api("GET", "/v1/subscriptions?limit=200", undefined, { quiet: true });
    const field = (id, label, el) => h("div", {}, h("label", { for: id, text: label }), el);
    const status = h("select", { id: "q-status" }, ["", "pending", "succeeded", "failed", "dead"].map((s) => h("option", { value: s, text: s || "any" })));
    const subscription = h("select", { id: "q-subscription" }, h("option", { value: "", text: "any" }),
      (subs.ok ? subs.body.subscriptions : []).map((s) => h("option", { value: s.id, text: s.name || s.id })));
    const entity = h("input", { id: "q-entity", type: "text", placeholder: "e.g. 12345" });
    const eventName = h("input", { id: "q-event", type: "text" });
    const since = h("input", { id: "q-since", type: "datetime-local" });
    const until = h("input", { id: "q-until", type: "datetime-local" });
    status.value = params.get("status") || "";
    subscription.value = params.get("subscription_id") || "";
    entity.value = params.get("entity_id") || "";
    eventName.value = params.get("event_name") || "";
    since.value = localInput(params.get("since"));
    until.value = localInput(params.get("until"));
    const results = h("div", { id: "results" });
    const form = h("form", {
      class: "filters", role: "search",
      onsubmit: (e) => {
        e.preventDefault();
        const iso = (v) => (v ? new Date(v).toISOString() : "");
        location.hash = "#/deliveries" + qs({
          status: status.value, subscription_id: subscription.value, entity_id: entity.value.trim(),
          event_name: eventName.value.trim(), since: iso(since.value), until: iso(until.value),
        });
      },
    },
      field("q-entity", "Entity id", entity), field("q-event", "Event name", eventName),
      field("q-status", "Status", status), field("q-subscription", "Subscription", subscription),
      field("q-since", "Since", since), field("q-until", "Until", until),
      h("div", {}, h("button", { type: "submit", class: "primary", text: "Search" })));
    show(h("h2", { text: "Deliveries" }), form, results);
    await page(null);

    async function page(cursor) {
      const q = {};
      for (const k of ["status", "subscription_id", "entity_id", "event_name", "since", "until"]) q[k] = params.get(k) || "";
      q.limit = 50;
      if (cursor) q.cursor = cursor;
      const r = await api("GET", "/v1/deliveries" + qs(q));
      if (!r.ok) return;
      const rows = r.body.deliveries.map((d) =>
        h("tr", {},
          h("td", { "data-label": "Created" }, h("a", { href: "#/deliveries/" + encodeURIComponent(d.id), text: when(d.created_at) })),
          h("td", { "data-label": "Event", text: d.event_name }),
          h("td", { "data-label": "Status" }, badge(d.status)),
          h("td", { "data-label": "Attempts", text: d.attempt_count }),
          h("td", { "data-label": "Last answer", text: d.last_status_code || "–" })));
      const more = r.body.next_cursor
        ? h("button", { type: "button", text: "Older", onclick: (e) => { e.target.remove(); page(r.body.next_cursor); } })
        : null;
      const table = results.querySelector("tbody");
      if (cursor && table) {
        table.append(...rows);
      } else {
        results.replaceChildren(rows.length
          ? h("table", { class: "responsive" },
              h("thead", {}, h("tr", {}, ["Created", "Event", "Status", "Attempts", "Last answer"].map((t) => h("th", { scope: "col", text: t })))),
              h("tbody", {}, rows))
          : h("p", { class: "muted", text: "No delivery matches." }));
      }
      if (more) results.append(h("div", { class: "actions" }, more));
    }
  }

  async function deliveryDetail(id) {
    const r = await api("GET", "/v1/deliveries/" + encodeURIComponent(id));
    if (!r.ok) return show(h("p", { text: "This delivery could not be read." }));
    const d = r.body;
    const attempts = (d.attempts || []).map((a) =>
      h("tr", {},
        h("td", { "data-label": "Attempt", text: a.attempt }),
        h("td", { "data-label": "At", text: when(a.at) }),
        h("td", { "data-label": "Answer", text: a.status_code || "–" }),
        h("td", { "data-label": "Duration", text: a.duration_ms + " ms" }),
        h("td", { "data-label": "Error", text: [a.error_class, a.error].filter(Boolean).join(": ") || "–" }),
        h("td", { "data-label": "Response", class: "wrap" }, a.response_excerpt ? h("pre", { text: a.response_excerpt }) : "–")));
    show(
      h("h2", { text: "Delivery " + d.id }),
      h("dl", {},
        h("dt", { text: "Status" }), h("dd", {}, badge(d.status)),
        h("dt", { text: "Event" }), h("dd", { text: d.event_name + " (" + d.event_id + ")" }),
        h("dt", { text: "Subscription" }), h("dd", {}, h("a", { href: "#/subscriptions/" + encodeURIComponent(d.subscription_id), text: d.subscription_id })),
        h("dt", { text: "Created" }), h("dd", { text: when(d.created_at) }),
        h("dt", { text: "Next attempt" }), h("dd", { text: when(d.next_attempt_at) })),
      h("div", { class: "actions" },
        h("button", {
          type: "button", text: "Retry",
          onclick: async (e) => {
            e.target.disabled = true;
            const r2 = await api("POST", "/v1/deliveries/" + encodeURIComponent(id) + "/retry", {});
            e.target.disabled = false;
            if (r2.ok) {
              say("Retry queued.");
              setTimeout(() => deliveryDetail(id), 1500);
            }
          },
        })),
      h("h3", { text: "Attempts" }),
      attempts.length
        ? h("table", { class: "responsive" },
            h("thead", {}, h("tr", {}, ["Attempt", "At", "Answer", "Duration", "Error", "Response"].map((t) => h("th", { scope: "col", text: t })))),
            h("tbody", {}, attempts))
        : h("p", { class: "muted", text: "Not attempted yet." }));
  }

  // ---- the event catalog --------------------------------------------------

  async function eventCatalog() {
    const r = await api("GET", "/v1/event_types");
    if (!r.ok) return;
    const byDomain = {};
    for (const e of r.body.event_types) (byDomain[e.domain] = byDomain[e.domain] || []).push(e);
    show(h("h2", { text: "Event catalog" }),
      Object.keys(byDomain).sort().map((domain) =>
        h("section", {}, h("h3", { text: domain }),
          h("table", { class: "responsive" },
            h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Name" }), h("th", { scope: "col", text: "Description" }))),
            h("tbody", {}, byDomain[domain].map((e) =>
              h("tr", {}, h("td", { "data-label": "Name", class: "mono", text: e.name }),
                h("td", { "data-label": "Description", text: e.description }))))))));
  }
})();
