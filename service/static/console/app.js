// Dispatcher console: the official @microsoft/signalr browser client used as a real frontend uses it.
//
// - One HubConnection per Connect, with withAutomaticReconnect() and an accessTokenFactory that hands
//   the client a fresh token whenever it (re)negotiates: dev tokens are re-fetched shortly before they
//   expire, a pasted token is used as is.
// - Continuity (./continuity.js, the same module the end-to-end tests drive): the hub URL carries
//   ?positions=true, so every event comes with its position in the log. Connecting resumes into the
//   form's groups from the position kept in localStorage (per hub URL and groups), and every reconnect
//   resumes again: what was missed meanwhile is replayed in order, and an event already shown is never
//   shown twice. When the server cannot replay, the page says so and marks the gap in the event list
//   (the console has no source of truth to reload from).
// - A reload of a connected page reconnects by itself (dev tokens only: a pasted token is not kept) and
//   resumes from the stored position; "Forget position" makes the next Connect start afresh.
// - The transport in use: the client has no public property for it. Its logger (a public extension
//   point, configureLogging(ILogger)) reports "Selecting transport 'X'." each time it tries one, and a
//   failed attempt is followed by the next selection, so the last selection before start() (or a
//   reconnect) succeeds is the transport in use. If a future client stops logging that line, the page
//   falls back to the transport that was requested and says so.

import { Continuity, offsetOf } from "./continuity.js";

const signalR = window.signalR;

const TARGETS = ["RecommendationReady", "JobAssigned"];
const MAX_ROWS = 200;
const MAX_ERRORS = 50;
const TIME_FORMAT = { hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3, hour12: false };
const REFRESH_MARGIN_MS = 60_000; // fetch a new dev token this long before the old one expires
const POSITION_KEY_PREFIX = "smartscheduler-realtime/console/position ";
const SESSION_KEY = "smartscheduler-realtime/console/session"; // sessionStorage: the form, never a token
// Why Resume could not replay (its "reason"), as a dispatcher reads it.
const REASONS = {
  fresh: "no position was kept",
  empty: "the server has no history yet",
  window: "away longer than the server keeps history",
  epoch: "the log was recreated since",
  ahead: "the position is ahead of the server's log",
  cap: "more than the server replays at once",
};

const byId = (id) => document.getElementById(id);
const ui = {
  form: byId("connect-form"),
  role: byId("role"),
  region: byId("region"),
  contractorId: byId("contractor-id"),
  token: byId("token"),
  fetchToken: byId("fetch-token"),
  transport: byId("transport"),
  protocol: byId("protocol"),
  hubUrl: byId("hub-url"),
  connect: byId("connect"),
  disconnect: byId("disconnect"),
  state: byId("state"),
  transportInUse: byId("transport-in-use"),
  protocolInUse: byId("protocol-in-use"),
  connectionId: byId("connection-id"),
  groups: byId("groups"),
  position: byId("position"),
  positionNote: byId("position-note"),
  forgetPosition: byId("forget-position"),
  resume: byId("resume"),
  notice: byId("replay-notice"),
  errors: byId("errors"),
  events: byId("events"),
  rows: byId("event-rows"),
  eventCount: byId("event-count"),
};

let connection = null; // the HubConnection of the current session, from Connect until it closes
let eventCount = 0;
const shown = new Set(); // positions of the events in the table: none is shown twice

const time = (date) => date.toLocaleTimeString(undefined, TIME_FORMAT);

// --- form -----------------------------------------------------------------------------------------

function readForm() {
  const data = new FormData(ui.form);
  const text = (name) => String(data.get(name) ?? "").trim();
  return {
    role: ui.role.value,
    regions: ui.region.value.split(",").map((r) => r.trim()).filter(Boolean),
    contractorId: ui.contractorId.value.trim(),
    tokenSource: text("tokenSource") || "dev",
    token: ui.token.value.trim(),
    transport: ui.transport.value,
    protocol: ui.protocol.value,
    hubUrl: ui.hubUrl.value.trim() || "/hub/recommendations",
  };
}

function updateRoleFields() {
  const role = ui.role.value;
  ui.region.disabled = role === "contractor";
  ui.contractorId.disabled = role === "dispatcher";
}

// The groups a role resumes into: a dispatcher its regions, a contractor its own group, an admin both.
function groupsOf(form) {
  const groups = [];
  if (form.role !== "contractor") {
    for (const region of form.regions) groups.push(`dispatch/${region.toLowerCase()}`);
  }
  if (form.role !== "dispatcher" && form.contractorId) {
    groups.push(`contractor/${form.contractorId.toLowerCase()}`);
  }
  return [...new Set(groups)];
}

// The form as it is kept for a reload of this tab (sessionStorage), without the token.
function saveSession(form, connected) {
  const { token, regions, ...kept } = form;
  const entry = { ...kept, region: regions.join(", "), connected };
  try {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(entry));
  } catch {
    // storage unavailable (e.g. disabled): a reload then starts from the defaults
  }
}

function restoreSession() {
  let entry = null;
  try {
    entry = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? "null");
  } catch {
    return null;
  }
  if (entry === null || typeof entry !== "object") return null;
  const set = (element, value) => {
    if (typeof value === "string") element.value = value;
  };
  set(ui.role, entry.role);
  set(ui.region, entry.region);
  set(ui.contractorId, entry.contractorId);
  set(ui.transport, entry.transport);
  set(ui.protocol, entry.protocol);
  set(ui.hubUrl, entry.hubUrl);
  if (entry.tokenSource === "dev" || entry.tokenSource === "paste") {
    ui.form.querySelector(`input[name="tokenSource"][value="${entry.tokenSource}"]`).checked = true;
  }
  return entry;
}

// --- positions (localStorage, one per hub URL and set of groups) ----------------------------------

function hubUrlOf(hubUrl) {
  const url = new URL(hubUrl, window.location.href);
  url.searchParams.set("positions", "true");
  return url.origin === window.location.origin ? `${url.pathname}${url.search}` : url.href;
}

function positionKey(form, groups) {
  const url = new URL(form.hubUrl, window.location.href);
  url.searchParams.delete("positions");
  return POSITION_KEY_PREFIX + JSON.stringify([url.href, [...groups].sort()]);
}

function loadPosition(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

function storePosition(key, position) {
  try {
    if (position === null) localStorage.removeItem(key);
    else localStorage.setItem(key, position);
  } catch {
    // storage unavailable: the position lives as long as the page
  }
}

function showPosition(position, note) {
  ui.position.textContent = position ?? "—";
  ui.position.dataset.position = position ?? "";
  ui.positionNote.textContent = note;
}

// While disconnected: the position the form's hub URL and groups would resume from.
function showStoredPosition() {
  if (connection !== null) return;
  const form = readForm();
  const groups = groupsOf(form);
  const position = groups.length ? loadPosition(positionKey(form, groups)) : null;
  showPosition(position, position === null ? "" : "(stored: Connect resumes from here)");
  ui.forgetPosition.disabled = position === null;
}

function forgetPosition() {
  if (connection !== null) return;
  const form = readForm();
  const groups = groupsOf(form);
  if (groups.length) storePosition(positionKey(form, groups), null);
  showStoredPosition();
}

// --- tokens ---------------------------------------------------------------------------------------

async function fetchDevToken(form) {
  const params = new URLSearchParams({ role: form.role });
  if (form.regions.length && form.role !== "contractor") params.set("region", form.regions.join(","));
  if (form.contractorId && form.role === "contractor") params.set("contractorId", form.contractorId);
  const response = await fetch(`/dev/token?${params}`, { cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const hint = response.status === 404 ? " (is the service running with AUTH_DEV_MODE=true?)" : "";
    throw new Error(`dev token refused: ${body.error ?? `HTTP ${response.status}`}${hint}`);
  }
  ui.token.value = body.token;
  if (body.contractorId && !ui.contractorId.value.trim()) {
    ui.contractorId.value = body.contractorId; // a random dev contractor: resume into its group
    form.contractorId = body.contractorId;
  }
  return { token: body.token, expiresAt: Date.parse(body.expiresAt) };
}

function tokenFactory(form) {
  if (form.tokenSource === "paste") {
    return () => form.token;
  }
  let current = null;
  return async () => {
    if (current === null || current.expiresAt - Date.now() < REFRESH_MARGIN_MS) {
      current = await fetchDevToken(form);
    }
    return current.token;
  };
}

// --- status, errors, events -----------------------------------------------------------------------

function setState(state) {
  ui.state.textContent = state;
  ui.state.dataset.state = state;
  const idle = state === "disconnected";
  ui.connect.disabled = !idle;
  ui.disconnect.disabled = idle;
  if (!idle) ui.forgetPosition.disabled = true;
}

function showError(text) {
  const item = document.createElement("li");
  item.dataset.testid = "error";
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  ui.errors.prepend(item);
  while (ui.errors.children.length > MAX_ERRORS) ui.errors.lastElementChild.remove();
}

function showGroups(groups) {
  ui.groups.textContent = groups.length ? groups.join(", ") : "—";
}

function showResume(outcome, text) {
  ui.resume.textContent = text;
  ui.resume.dataset.outcome = outcome;
}

function showResumeResult(result) {
  const outcome = result.recovered ? "recovered" : `not recovered — ${result.reason} (${REASONS[result.reason] ?? "?"})`;
  showResume(result.recovered ? "recovered" : result.reason, `${outcome} · ${result.replayed} replayed · ${time(new Date())}`);
  ui.resume.dataset.replayed = String(result.replayed);
}

function addRow(type, event, position) {
  if (shown.has(position)) return; // already in the table (e.g. replayed after a reload of the page)
  const e = event && typeof event === "object" ? event : { jobId: JSON.stringify(event) };
  const row = document.createElement("tr");
  row.dataset.testid = "event-row";
  row.dataset.type = type;
  row.dataset.jobId = String(e.jobId ?? "");
  row.dataset.position = position;
  const cells = [
    time(new Date()),
    type,
    e.region,
    e.jobId,
    type === "JobAssigned" ? e.contractorId : e.requestId,
    position,
  ];
  for (const value of cells) {
    const cell = document.createElement("td");
    cell.textContent = value === undefined || value === null ? "—" : String(value);
    row.append(cell);
  }
  shown.add(position);
  ui.rows.prepend(row);
  while (ui.rows.rows.length > MAX_ROWS) {
    shown.delete(ui.rows.lastElementChild.dataset.position);
    ui.rows.deleteRow(-1);
  }
  ui.eventCount.textContent = String(++eventCount);
}

// Resume could not replay what was missed: say so, and mark where in the event list the gap is
// (below the events that arrived since this resume began: those are after the gap).
function showGap(session, result) {
  const from = session.resumeFrom;
  let count = null;
  if (from !== null && result.position !== null && (result.reason === "window" || result.reason === "cap")) {
    count = Math.max(0, offsetOf(result.position) - offsetOf(from));
  }
  const what = count === null ? "Events" : `Up to ${count} event${count === 1 ? "" : "s"}`;
  const reason = REASONS[result.reason] ?? result.reason;
  const at = time(new Date());
  ui.notice.textContent =
    `${what} could not be replayed (${reason}) — reload from the source of truth. ` +
    `This console has none to reload from: the event list has a gap, marked at ${at}.`;
  ui.notice.dataset.reason = result.reason;
  ui.notice.hidden = false;
  ui.events.dataset.gap = "true";

  const row = document.createElement("tr");
  row.dataset.testid = "gap-row";
  row.dataset.reason = result.reason;
  row.className = "gap";
  const cell = document.createElement("td");
  cell.colSpan = 6;
  cell.textContent = `${at} — gap: ${what.toLowerCase()} not replayed (${reason})`;
  row.append(cell);
  const newer = Math.min(eventCount - session.rowsAtResume, ui.rows.rows.length);
  ui.rows.insertBefore(row, ui.rows.rows[newer] ?? null);
}

// --- the connection -------------------------------------------------------------------------------

// An ILogger (public API) that forwards warnings to the browser console and remembers the transport.
function transportLogger(tracker) {
  return {
    log(level, message) {
      const selected = /^Selecting transport '(\w+)'/.exec(message);
      if (selected) tracker.selected = selected[1];
      if (message.startsWith("Reconnect attempt failed")) showError(message);
      if (level >= signalR.LogLevel.Warning && level !== signalR.LogLevel.None) {
        console.warn(`[signalr] ${message}`);
      }
    },
  };
}

function showTransport(form, tracker) {
  ui.transportInUse.textContent =
    tracker.selected ?? (form.transport === "auto" ? "unknown" : `${form.transport} (requested)`);
  ui.transportInUse.dataset.transport = tracker.selected ?? "";
  ui.connectionId.textContent = connection?.connectionId ?? "—";
}

// Mark where a resume begins (for showGap), then resume; a refusal is shown and the connection stays.
async function resume(session) {
  beginResume(session);
  try {
    await session.continuity.resume();
  } catch (error) {
    resumeFailed(session, error);
  }
}

function beginResume(session) {
  session.resumeFrom = session.continuity.position;
  session.rowsAtResume = eventCount;
}

// A refusal (the server answered with an error; the connection stays, in no group) or a failure (the
// connection went during the call: the next reconnect resumes again).
function resumeFailed(session, error) {
  if (connection !== session.hub) return; // Disconnect was clicked: nothing to report
  const refused = session.hub.state === signalR.HubConnectionState.Connected;
  showGroups([]);
  if (refused) showPosition(session.continuity.position, "(not resumed: kept for the next Connect)");
  showResume(refused ? "refused" : "failed", `${refused ? "refused" : "failed"} · ${time(new Date())}`);
  ui.resume.dataset.replayed = "0";
  showError(`Resume(${session.groups.join(", ")}) ${refused ? "refused" : "failed"}: ${error.message}`);
}

async function connect(event) {
  event?.preventDefault();
  if (connection !== null) return;
  const form = readForm();
  if (form.tokenSource === "paste" && !form.token) {
    showError("Paste a token first (or choose “Fetch a dev token”).");
    return;
  }
  const tracker = { selected: null };
  const accessTokenFactory = tokenFactory(form);
  const options = { accessTokenFactory };
  if (form.transport !== "auto") options.transport = signalR.HttpTransportType[form.transport];
  const builder = new signalR.HubConnectionBuilder()
    .withUrl(hubUrlOf(form.hubUrl), options)
    .withAutomaticReconnect({
      // Keep trying (a real frontend does), backing off to 30 s, with jitter so that clients of a
      // restarted instance do not all come back in the same second.
      nextRetryDelayInMilliseconds: ({ previousRetryCount }) =>
        Math.min(30_000, 500 * 2 ** previousRetryCount) + Math.random() * 1000,
    })
    .configureLogging(transportLogger(tracker));
  if (form.protocol === "messagepack") {
    builder.withHubProtocol(new signalR.protocols.msgpack.MessagePackHubProtocol());
  }
  const hub = builder.build();
  connection = hub;
  setState("connecting");

  const failed = (text) => {
    if (connection === hub) connection = null;
    setState("disconnected");
    saveSession(form, false);
    showError(text);
    showStoredPosition();
  };
  // A dev contractor learns its id with its token, and its group is named after it: fetch the token
  // before deciding the groups (the client reuses it for the first negotiation).
  try {
    await accessTokenFactory();
  } catch (error) {
    failed(`Could not connect: ${error.message}`);
    return;
  }
  if (connection !== hub) return; // Disconnect was clicked meanwhile
  const groups = groupsOf(form);
  if (!groups.length) {
    failed("Nothing to resume into: give a region (dispatcher, admin) or a contractor id (contractor, admin).");
    return;
  }
  const key = positionKey(form, groups);
  const session = { hub, groups, key, continuity: null, resumes: 0, resumeFrom: null, rowsAtResume: 0 };

  // Registered before the Continuity's own handlers, so that they run first.
  hub.onreconnecting((error) => {
    setState("reconnecting");
    showGroups([]);
    if (error) showError(`Connection lost, reconnecting: ${error.message}`);
  });
  hub.onreconnected(() => {
    setState("connected");
    showTransport(form, tracker);
    beginResume(session); // the Continuity resumes right after this handler
  });
  hub.onclose((error) => {
    if (connection === hub) connection = null;
    setState("disconnected");
    showGroups([]);
    ui.connectionId.textContent = "—";
    ui.transportInUse.textContent = "—";
    ui.transportInUse.dataset.transport = "";
    ui.protocolInUse.textContent = "—";
    if (error) showError(`Connection closed: ${error.message}`);
    showStoredPosition();
  });

  session.continuity = new Continuity(hub, {
    groups,
    targets: TARGETS,
    position: loadPosition(key),
    onEvent: (target, payload, position) => addRow(target, payload, position),
    onPosition: (position) => {
      storePosition(key, position);
      if (connection === hub) showPosition(position, "");
    },
    onReload: async (result) => {
      // A first start without a kept position has missed nothing; anything else has a gap.
      const firstStart = session.resumes === 0 && session.resumeFrom === null && result.reason === "fresh";
      if (!firstStart) showGap(session, result);
    },
    onResume: (result) => {
      session.resumes += 1;
      showGroups(groups);
      showResumeResult(result);
      showPosition(session.continuity.position, "");
    },
    onError: (error) => resumeFailed(session, error),
  });
  showPosition(session.continuity.position, session.continuity.position === null ? "" : "(resuming from here)");

  try {
    await hub.start();
  } catch (error) {
    failed(`Could not connect: ${error.message}`);
    return;
  }
  setState("connected");
  showTransport(form, tracker);
  ui.protocolInUse.textContent = form.protocol;
  saveSession(form, true);
  await resume(session);
}

async function disconnect() {
  saveSession(readForm(), false);
  const hub = connection;
  if (hub === null) return;
  if (hub.state === signalR.HubConnectionState.Disconnected) {
    // Still fetching its token, not started: there is nothing to stop, and it will not start.
    connection = null;
    setState("disconnected");
    showStoredPosition();
    return;
  }
  await hub.stop();
}

async function fetchTokenClicked() {
  try {
    await fetchDevToken(readForm());
  } catch (error) {
    showError(error.message);
  }
  showStoredPosition();
}

ui.form.addEventListener("submit", connect);
ui.form.addEventListener("input", showStoredPosition);
ui.form.addEventListener("change", showStoredPosition);
ui.disconnect.addEventListener("click", disconnect);
ui.fetchToken.addEventListener("click", fetchTokenClicked);
ui.forgetPosition.addEventListener("click", forgetPosition);
ui.role.addEventListener("change", updateRoleFields);
window.addEventListener("storage", showStoredPosition); // another tab of the console moved or forgot it

const restored = restoreSession();
updateRoleFields();
setState("disconnected");
showStoredPosition();
// A reload of a connected page connects again and resumes (a pasted token is not kept: paste it again).
if (restored?.connected && restored.tokenSource === "dev") connect(null);
