// Customer 360: reads one customer through the API's routes with the key the person entered
// and follows `/changes` to read it again when it changes. Customer data is only ever set as
// text (textContent), never parsed as HTML.
"use strict";

const KEY_STORAGE = "omnistream.customer360.apiKey";
const RECONNECT_MS = 2000;
const RECONNECT_MAX_MS = 30000;
// The API sends a comment every 15 s: a stream silent for longer is dead, whatever TCP says.
const IDLE_MS = 45000;
const RELOAD_DEBOUNCE_MS = 250;

const byId = (id) => document.getElementById(id);
const state = { customerId: null, stream: null, reloadTimer: null, generation: 0 };

// ---- elements -------------------------------------------------------------------------------

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function table(caption, headings, rows) {
  return el("table", {},
    el("caption", {}, caption),
    el("thead", {}, el("tr", {}, headings.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((cell, i) =>
      i === 0 ? el("th", { scope: "row" }, cell) : el("td", {}, cell))))));
}

function facts(pairs) {
  return el("dl", { class: "facts" },
    pairs.filter(([, value]) => value !== null && value !== undefined)
      .map(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
}

function note(text, kind) {
  return el("p", { class: kind ? `note ${kind}` : "note" }, text);
}

function fill(sectionId, ...content) {
  const body = byId(sectionId).querySelector(".body");
  body.replaceChildren(...content.flat().filter(Boolean));
}

// ---- words ----------------------------------------------------------------------------------

const CHANNELS = {
  web: "Website", mobile_app: "Mobile app", email: "Email", sms: "SMS", whatsapp: "WhatsApp",
  push: "Push", store: "Store", call_center: "Call center", social: "Social", chat: "Chat",
};
const channelName = (channel) => CHANNELS[channel] || channel || "—";

const STATUS_WORDS = { allowed: "May send now", blocked: "Do not send", deferred: "Not yet" };

const REASONS = {
  support_ticket_open: ["a support ticket is open", "until the ticket is resolved"],
  consent_revoked: ["the customer withdrew consent", "until they consent again"],
  no_consent: ["no consent given for this channel", "until they consent"],
  hard_bounce: ["messages to this address bounced", "until the address works again"],
  spam_report: ["the customer reported a message as spam", "until they consent again"],
  frequency_cap: ["enough messages were sent recently (frequency cap)", null],
  quiet_hours: ["it is quiet hours for the customer", null],
  recent_order: ["the customer ordered recently", null],
  holdout: ["the customer is in the holdout group (kept from marketing on purpose)", "for as long as the group lasts"],
  erased: ["the customer's data was erased at their request", null],
};

const LEDGER_KINDS = {
  earn: "Earned (pending)", activate: "Became spendable", redeem: "Redeemed", reject: "Redemption refused",
  reverse: "Reversed (refund)", expire: "Expired", adjust: "Adjusted", erase: "Erased",
  merge_out: "Moved to another account", merge_in: "Moved in from a merged account",
};

const EXIT_REASONS = {
  completed: "completed", goal: "reached the goal", exited: "left (exit condition)",
  exit_step: "left at an exit step", suppressed: "stopped: may not be messaged",
  withdrawn: "stopped: journey withdrawn", merged: "moved with a merge",
};

const dateFormat = new Intl.DateTimeFormat(undefined, {
  day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit",
});
const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

function relative(date) {
  const seconds = (date.getTime() - Date.now()) / 1000;
  const units = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400],
    ["hour", 3600], ["minute", 60]];
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size) return relativeFormat.format(Math.round(seconds / size), unit);
  }
  return "just now";
}

function when(text) {
  if (!text) return "—";
  const date = new Date(text);
  if (Number.isNaN(date.getTime())) return text;
  return el("time", { datetime: text, title: text }, `${dateFormat.format(date)} (${relative(date)})`);
}

// Digits of each currency's minor unit as ISO 4217 (and the producers' minor amounts) count
// them, as loyalty-points does (crates/loyalty-points/src/rules.rs): browsers' tables differ for
// some (IQD, for one).
const ZERO_DIGITS = ["BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI",
  "VND", "VUV", "XAF", "XOF", "XPF"];
const THREE_DIGITS = ["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
const FOUR_DIGITS = ["CLF", "UYW"];

function minorDigits(currency) {
  if (ZERO_DIGITS.includes(currency)) return 0;
  if (THREE_DIGITS.includes(currency)) return 3;
  return FOUR_DIGITS.includes(currency) ? 4 : 2;
}

function money(minorByCurrency) {
  const entries = Object.entries(minorByCurrency || {});
  if (entries.length === 0) return "none yet";
  return entries.map(([currency, minor]) => {
    const digits = minorDigits(currency);
    try {
      const format = new Intl.NumberFormat(undefined,
        { style: "currency", currency, minimumFractionDigits: digits, maximumFractionDigits: digits });
      return format.format(minor / 10 ** digits);
    } catch {
      return `${minor} ${currency} (minor units)`;
    }
  }).join(", ");
}

function traitValue(value) {
  if (value === null || value === undefined) return "—";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

// ---- sections -------------------------------------------------------------------------------

function renderProfile(profile) {
  if (!profile) return fill("profile", note("No profile yet: no event of this customer was processed."));
  const channels = (profile.channels || []).map((c) => {
    const counts = Object.entries(c.event_counts || {}).map(([kind, n]) => `${kind.replaceAll("_", " ")} ${n}`);
    return [channelName(c.channel), when(c.first_seen_at), when(c.last_seen_at), counts.join(", ")];
  });
  const lastOrder = profile.last_order_at
    ? el("span", {}, when(profile.last_order_at), ` on ${channelName(profile.last_order_channel)}`)
    : "no order yet";
  const traits = Object.entries(profile.traits || {}).sort(([a], [b]) => a.localeCompare(b))
    .map(([name, entry]) => [name, traitValue(entry.value), when(entry.updated_at)]);
  fill("profile",
    facts([
      ["Lifetime value", money(profile.lifetime_value_minor)],
      ["Orders", String(profile.orders_count ?? 0)],
      ["Last order", lastOrder],
      ["Refunds", profile.refunds_count ? `${profile.refunds_count} (${money(profile.refunded_value_minor)})` : "none"],
      ["First seen", when(profile.first_seen_at)],
      ["Last seen", when(profile.last_seen_at)],
    ]),
    channels.length ? table("Channels the customer used", ["Channel", "First", "Last", "Events"], channels)
      : note("No channel activity yet."),
    traits.length ? table("Traits", ["Trait", "Value", "Updated"], traits) : null);
}

function renderTickets(profile) {
  if (!profile) return fill("tickets", note("No profile yet."));
  const open = profile.open_tickets || [];
  const resolved = profile.last_resolved_ticket;
  fill("tickets",
    open.length
      ? el("ul", { class: "tickets" }, open.map((t) => el("li", {},
        el("strong", {}, t.ticket_id), ` on ${channelName(t.channel)}`, t.topic ? ` about ${t.topic}` : "",
        ", opened ", when(t.opened_at))))
      : note("No open tickets."),
    resolved ? note(el("span", {}, `Last resolved: ${resolved.ticket_id} (${channelName(resolved.channel)}), `,
      when(resolved.resolved_at))) : null);
}

// How long a reason lasts: the event that ends it (a ticket resolved), its time, or both (a
// ticket's safety maximum).
function lasts(reason) {
  const ends = REASONS[reason.code] && REASONS[reason.code][1];
  if (!reason.until) return ends || "until a new event lifts it";
  return ends ? el("span", {}, `${ends}, at the latest `, when(reason.until)) : el("span", {}, "until ", when(reason.until));
}

function reasonWords(reason, several) {
  const [words] = REASONS[reason.code] || [reason.code.replaceAll("_", " ")];
  const detail = reason.detail ? ` (${reason.detail})` : "";
  // With several reasons, each says how long it lasts; the channel's until is the latest.
  return el("li", {}, `${words}${detail}`, several ? el("span", {}, ": ", lasts(reason)) : null);
}

// A channel's until: while a reason waits for an event the API gives no time; else the latest
// reason's end.
function untilWords(channel) {
  if (channel.status === "allowed") return "—";
  const waiting = channel.reasons.find((r) => !r.until);
  const last = waiting || channel.reasons.find((r) => r.until === channel.until);
  return last ? lasts(last) : channel.until ? el("span", {}, "until ", when(channel.until)) : "—";
}

function reachabilityTable(caption, answer) {
  const rows = (answer.channels || []).map((c) => {
    const status = el("span", { class: `status ${c.status}` }, STATUS_WORDS[c.status] || c.status);
    const several = c.reasons.length > 1;
    const reasons = c.reasons.length
      ? el("ul", { class: "reasons" }, c.reasons.map((r) => reasonWords(r, several))) : "—";
    return [channelName(c.channel), status, reasons, untilWords(c)];
  });
  return table(caption, ["Channel", "Now", "Why", "Until"], rows);
}

function renderReachability(marketing, transactional) {
  if (marketing.status !== 200) return fill("reachability", refusal(marketing, "reachability"));
  const m = marketing.body;
  const allowed = m.allowed.length
    ? `Marketing may go out on ${m.allowed.map(channelName).join(", ")}${m.ranked_by_affinity ? " (best first)" : ""}.`
    : "No marketing message may go out now.";
  fill("reachability",
    note(allowed, m.allowed.length ? "good" : "bad"),
    m.holdout ? note("In the holdout group: no marketing, on purpose.", "bad") : null,
    m.stale ? note("This may be out of date: a change was due and suppression has not caught up.", "bad") : null,
    reachabilityTable("Marketing messages", m),
    transactional.status === 200 ? reachabilityTable("Transactional messages (orders, receipts)", transactional.body) : null,
    m.next_change_at ? note(el("span", {}, "Next change without a new event: ", when(m.next_change_at))) : null);
}

function confidence(score) {
  if (score.insufficient_data) return "too few messages to tell";
  if (score.std_dev <= 0.05) return "high confidence";
  if (score.std_dev <= 0.15) return "medium confidence";
  return "low confidence";
}

function renderAffinity(affinity) {
  if (!affinity) return fill("affinity", note("Not scored yet: no message was sent to this customer."));
  const byScore = [...(affinity.channels || [])].sort((a, b) => b.score - a.score);
  const rows = byScore.map((score) => {
    const percent = Math.round(score.score * 100);
    const spread = Math.round(score.std_dev * 100);
    const bar = el("span", { class: "fill" });
    bar.style.width = `${Math.max(0, Math.min(100, score.score * 100))}%`;
    const band = el("span", { class: "band" });
    band.style.left = `${Math.max(0, percent - spread)}%`;
    band.style.width = `${Math.min(100, percent + spread) - Math.max(0, percent - spread)}%`;
    return el("li", { class: score.insufficient_data ? "weak" : "" },
      el("span", { class: "label" }, channelName(score.channel)),
      el("span", { class: "track", "aria-hidden": "true" }, bar, band),
      el("span", { class: "value" }, `${percent}% ± ${spread}: ${confidence(score)}`,
        score.marketing_consent ? "" : ", no marketing consent"));
  });
  fill("affinity",
    el("ol", { class: "bars", "aria-label": "Likelihood to engage, by channel, most likely first" }, rows),
    note(el("span", {}, `Engagement per message; older messages count half after ${affinity.half_life_days} days. As of `,
      when(affinity.as_of))));
}

function renderLoyalty(loyalty) {
  if (loyalty.status === 404) return fill("loyalty", note("No loyalty account."));
  if (loyalty.status !== 200) return fill("loyalty", refusal(loyalty, "loyalty points"));
  const { balance, recent_entries: entries } = loyalty.body;
  const expiry = balance && balance.next_expiry
    ? el("span", {}, `${balance.next_expiry.points} points on `, when(balance.next_expiry.at)) : "none";
  const rows = (entries || []).map((e) => [
    when(e.occurred_at),
    LEDGER_KINDS[e.kind] || e.kind,
    // Entries carry signed points; a refused redemption carries what was asked.
    e.kind === "reject" ? `${e.points} asked` : `${e.points > 0 ? "+" : ""}${e.points}`,
    `${e.balance_after.active} spendable, ${e.balance_after.pending} pending`,
    [e.reason, e.order_id ? `order ${e.order_id}` : null, e.channel ? channelName(e.channel) : null]
      .filter(Boolean).join(" · ") || "—",
  ]);
  fill("loyalty",
    balance ? facts([
      ["Spendable", String(balance.active)],
      ["Pending", String(balance.pending)],
      ["Tier", balance.tier],
      ["Earned in all", String(balance.lifetime_earned)],
      ["Spent", String(balance.spent)],
      ["Expired", String(balance.expired)],
      ["Next expiry", expiry],
    ]) : null,
    rows.length ? table("Recent ledger entries, newest first", ["When", "What", "Points", "Balance after", "Details"], rows)
      : note("No ledger entries."));
}

function renderJourneys(journeys) {
  if (journeys.status === 404) return fill("journeys", note("Not in any journey."));
  if (journeys.status !== 200) return fill("journeys", refusal(journeys, "journeys"));
  const { entries, last_exits: exits } = journeys.body;
  fill("journeys",
    entries.length ? table("In progress", ["Journey", "Step", "Since", "Waiting until"],
      entries.map((e) => [`${e.journey_id} (v${e.journey_version})`, e.step, when(e.step_since),
        e.waiting_until ? when(e.waiting_until) : "—"])) : note("In no journey now."),
    exits.length ? table("Latest exits", ["Journey", "How it ended", "When"],
      exits.map((x) => [`${x.journey_id} (v${x.journey_version})`,
        `${EXIT_REASONS[x.reason] || x.reason}${x.detail ? `: ${x.detail}` : ""}`, when(x.at)])) : null);
}

function renderConsent(profile) {
  if (!profile) return fill("consent", note("No profile yet."));
  const history = [...(profile.consent_history || [])].reverse();
  const current = (profile.consents || []).map((c) =>
    `${channelName(c.channel)} ${c.purpose}: ${c.granted ? "granted" : "withdrawn"}`);
  fill("consent",
    current.length ? note(`Now: ${current.join("; ")}.`) : note("No consent given or withdrawn yet."),
    history.length ? table("Every grant and withdrawal, newest first", ["When", "Channel", "Purpose", "Change", "Event"],
      history.map((c) => [when(c.at), channelName(c.channel), c.purpose,
        el("span", { class: `status ${c.granted ? "allowed" : "blocked"}` }, c.granted ? "granted" : "withdrawn"),
        c.event_id])) : null);
}

function renderIdentity(identity) {
  if (identity.status === 404) return fill("identity", note("No identifiers known."));
  if (identity.status !== 200) return fill("identity", refusal(identity, "identifiers"));
  const { identifiers, aliases } = identity.body;
  fill("identity",
    identifiers.length ? table("Identifiers linked to the customer", ["Type", "Value", "Linked"],
      identifiers.map((i) => [i.type, i.value, when(i.occurred_at)])) : note("No identifiers linked by identity resolution."),
    aliases.length ? note(`Also known as: ${aliases.join(", ")}.`) : null);
}

function refusal(answer, what) {
  if (answer.status === 403) return note(`Your API key may not read ${what}.`, "bad");
  const message = answer.body && answer.body.error ? answer.body.error.message : `HTTP ${answer.status}`;
  return note(`Could not read ${what}: ${message}`, "bad");
}

// ---- reading --------------------------------------------------------------------------------

function headers() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}`, Accept: "application/json" } : { Accept: "application/json" };
}

async function read(path) {
  try {
    const response = await fetch(path, { headers: headers(), cache: "no-store" });
    let body = null;
    try { body = await response.json(); } catch { body = null; }
    return { status: response.status, body };
  } catch (error) {
    return { status: 0, body: { error: { message: `the API did not answer (${error.message})` } } };
  }
}

function showMessage(text) {
  byId("message").textContent = text;
}

function showAlert(text) {
  const alert = byId("alert");
  // The same text again is not announced again (a stream reconnecting while the API is down).
  if (alert.textContent !== text) alert.textContent = text;
  alert.hidden = !text;
}

// Hides the customer and forgets what was shown of them (an erased one among them).
function clearCustomer() {
  const article = byId("customer");
  article.hidden = true;
  byId("customer-title").textContent = "";
  byId("updated").textContent = "";
  for (const body of article.querySelectorAll(".body")) body.replaceChildren();
}

async function load(customerId, reason) {
  const generation = ++state.generation;
  const base = `/v1/customers/${encodeURIComponent(customerId)}`;
  const [document, marketing, transactional, loyalty, journeys, identity] = await Promise.all([
    read(base), read(`${base}/reachability`), read(`${base}/reachability?purpose=transactional`),
    read(`${base}/loyalty`), read(`${base}/journeys`), read(`${base}/identity`),
  ]);
  // A newer search or update started meanwhile: its answer is the one to show.
  if (generation !== state.generation) return;
  const answers = [document, marketing, transactional, loyalty, journeys, identity];
  const article = byId("customer");
  if (answers.some((a) => a.status === 401)) {
    clearCustomer();
    showMessage("");
    showAlert("Not authorized: the API key is missing or not known. Enter a valid key and search again.");
    stopWatching();
    return;
  }
  // Known to no service (an id merged into a known one is known): the reachability of an
  // unknown id is answered too, with `known: false`.
  if (document.status === 404 && identity.status !== 200 && !(marketing.status === 200 && marketing.body.known)) {
    clearCustomer();
    showAlert("");
    const erased = marketing.status === 200
      && marketing.body.channels.some((c) => c.reasons.some((r) => r.code === "erased"));
    showMessage(erased
      ? `Customer “${customerId}” was erased at their request: nothing is held on them.`
      : `No customer with the id “${customerId}”. This page shows them as soon as a first record arrives.`);
    return;
  }
  const failed = answers.find((a) => a.status === 0 || a.status >= 500);
  const why = failed && (failed.body?.error?.message || `HTTP ${failed.status}`);
  showAlert(failed ? `Some of the customer could not be read: ${why}` : "");
  const canonical = [document, identity, loyalty].find((a) => a.status === 200)?.body.customer_id || customerId;
  byId("customer-title").textContent = `Customer ${canonical}`;
  const merged = byId("merged");
  merged.hidden = canonical === customerId;
  merged.textContent = merged.hidden ? "" : `“${customerId}” was merged into this customer.`;
  // 404 here: an id identity resolution knows but no service has a record of yet.
  if (document.status === 200 || document.status === 404) {
    const profile = document.status === 200 ? document.body.profile : null;
    renderProfile(profile);
    renderTickets(profile);
    renderConsent(profile);
    renderAffinity(document.status === 200 ? document.body.channel_affinity : null);
  } else {
    for (const id of ["profile", "tickets", "consent"]) fill(id, refusal(document, "profiles"));
    fill("affinity", refusal(document, "channel affinity"));
  }
  renderReachability(marketing, transactional);
  renderLoyalty(loyalty);
  renderJourneys(journeys);
  renderIdentity(identity);
  const firstShown = article.hidden;
  article.hidden = false;
  const time = new Date().toLocaleTimeString();
  byId("updated").textContent = `Read at ${time}.`;
  showMessage(reason === "change" ? `Updated at ${time}: new records arrived.` : `Showing customer ${canonical}.`);
  // A search moves focus to the customer (its first reading may be the one the stream's
  // `open` asks for); a live update must not pull focus out of what the person types.
  if (firstShown && reason !== "change") article.focus();
}

// ---- live updates ---------------------------------------------------------------------------

function setLive(stateName, text) {
  const live = byId("live");
  live.dataset.state = stateName;
  live.textContent = `Live updates: ${text}`;
}

function stopWatching() {
  if (state.stream) state.stream.abort();
  state.stream = null;
  clearTimeout(state.reloadTimer);
  setLive("off", "off");
}

function scheduleReload(reason) {
  clearTimeout(state.reloadTimer);
  state.reloadTimer = setTimeout(() => load(state.customerId, reason), RELOAD_DEBOUNCE_MS);
}

// EventSource cannot send an Authorization header: the stream is read with fetch.
async function watch(customerId) {
  stopWatching();
  const controller = new AbortController();
  state.stream = controller;
  setLive("connecting", "connecting…");
  let wait = RECONNECT_MS;
  while (!controller.signal.aborted) {
    // One connection; aborted with the watch, or by the idle watchdog.
    const connection = new AbortController();
    const stop = () => connection.abort();
    controller.signal.addEventListener("abort", stop);
    let watchdog = setTimeout(stop, IDLE_MS);
    try {
      const response = await fetch(`/v1/customers/${encodeURIComponent(customerId)}/changes`,
        { headers: { ...headers(), Accept: "text/event-stream" }, signal: connection.signal });
      if (response.status === 401 || response.status === 403) {
        setLive("off", "not allowed for this API key");
        return;
      }
      if (!response.ok || !response.body) {
        const retryAfter = Number(response.headers.get("Retry-After"));
        if (retryAfter > 0) wait = Math.max(wait, retryAfter * 1000);
        throw new Error(`HTTP ${response.status}`);
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        clearTimeout(watchdog);
        watchdog = setTimeout(stop, IDLE_MS);
        buffer += value.replaceAll("\r\n", "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const kind = block.split("\n").find((line) => line.startsWith("event:"))?.slice(6).trim();
          if (kind === "open") {
            setLive("on", "on");
            wait = RECONNECT_MS;
            // What changed between the page's reads and this stream's start (or while it was
            // reconnecting) is read now.
            scheduleReload("open");
          }
          if (kind === "change") scheduleReload("change");
        }
      }
    } catch {
      // Aborted, or the network dropped: decided below.
    } finally {
      clearTimeout(watchdog);
      controller.signal.removeEventListener("abort", stop);
    }
    if (controller.signal.aborted) return;
    // The API restarted, the network dropped or the stream went silent: try again, waiting
    // longer each time (up to 30 s) so that a struggling API is not read harder.
    setLive("connecting", `reconnecting in ${Math.round(wait / 1000)} s…`);
    await new Promise((resolve) => setTimeout(resolve, wait));
    wait = Math.min(wait * 2, RECONNECT_MAX_MS);
  }
}

// ---- search ---------------------------------------------------------------------------------

function show(customerId) {
  state.customerId = customerId;
  byId("matches").hidden = true;
  showAlert("");
  showMessage(`Reading customer ${customerId}…`);
  load(customerId, "search");
  watch(customerId);
}

const SEARCH_WORDS = { email: "email", phone: "phone number", loyalty_card: "loyalty card" };

// An email, phone or card: the customers identity resolution links it to; one is shown, several
// are listed to choose from.
async function find(kind, raw) {
  stopWatching();
  const generation = ++state.generation;
  clearCustomer();
  byId("matches").hidden = true;
  showAlert("");
  showMessage(`Looking for the ${SEARCH_WORDS[kind]} ${raw}…`);
  const query = new URLSearchParams({ identifier_type: kind, identifier_value: raw });
  const answer = await read(`/v1/customers?${query}`);
  // A newer search started meanwhile: its answer is the one to show.
  if (generation !== state.generation) return;
  if (answer.status === 401) {
    showMessage("");
    return showAlert("Not authorized: the API key is missing or not known. Enter a valid key and search again.");
  }
  if (answer.status !== 200) {
    showMessage("");
    const message = answer.body && answer.body.error ? answer.body.error.message : `HTTP ${answer.status}`;
    return showAlert(answer.status === 403 ? `Your API key may not search by ${SEARCH_WORDS[kind]}: ${message}` : `Cannot search: ${message}`);
  }
  const { customers, identifier_value: value } = answer.body;
  if (customers.length === 1) {
    history.replaceState(null, "", `#customer=${encodeURIComponent(customers[0])}`);
    return show(customers[0]);
  }
  if (customers.length === 0) {
    return showMessage(`No customer with the ${SEARCH_WORDS[kind]} ${value}.`);
  }
  showMessage(`${customers.length} customers have the ${SEARCH_WORDS[kind]} ${value}: choose one.`);
  const matches = byId("matches");
  matches.replaceChildren(el("ul", {}, customers.map((id) => {
    const button = el("button", { type: "button" }, id);
    button.addEventListener("click", () => {
      history.replaceState(null, "", `#customer=${encodeURIComponent(id)}`);
      show(id);
    });
    return el("li", {}, button);
  })));
  matches.hidden = false;
}

document.addEventListener("DOMContentLoaded", () => {
  const keyInput = byId("api-key");
  const idInput = byId("customer-id");
  keyInput.value = sessionStorage.getItem(KEY_STORAGE) || "";
  byId("search").addEventListener("submit", (event) => {
    event.preventDefault();
    const customerId = idInput.value.trim();
    if (!customerId) return;
    if (keyInput.value) sessionStorage.setItem(KEY_STORAGE, keyInput.value);
    else sessionStorage.removeItem(KEY_STORAGE);
    const kind = byId("search-by").value;
    if (kind !== "customer_id") return find(kind, customerId);
    // The id goes in the address (to share or reload), never the key.
    history.replaceState(null, "", `#customer=${encodeURIComponent(customerId)}`);
    show(customerId);
  });
  const linked = new URLSearchParams(location.hash.slice(1)).get("customer");
  if (linked) {
    idInput.value = linked;
    show(linked);
  }
});
