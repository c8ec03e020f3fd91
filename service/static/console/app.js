// Dispatcher console: the official @microsoft/signalr browser client used as a real frontend uses it.
//
// - One HubConnection per Connect, with withAutomaticReconnect() and an accessTokenFactory that hands
//   the client a fresh token whenever it (re)negotiates: dev tokens are re-fetched shortly before they
//   expire, a pasted token is used as is.
// - Group membership belongs to a connection on the server, and a reconnect is a new connection, so the
//   groups are joined again in onreconnected — the part real frontends most often forget.
// - The transport in use: the client has no public property for it. Its logger (a public extension
//   point, configureLogging(ILogger)) reports "Selecting transport 'X'." each time it tries one, and a
//   failed attempt is followed by the next selection, so the last selection before start() (or a
//   reconnect) succeeds is the transport in use. If a future client stops logging that line, the page
//   falls back to the transport that was requested and says so.

const signalR = window.signalR;

const MAX_ROWS = 200;
const MAX_ERRORS = 50;
const TIME_FORMAT = { hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3, hour12: false };
const REFRESH_MARGIN_MS = 60_000; // fetch a new dev token this long before the old one expires

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
  errors: byId("errors"),
  rows: byId("event-rows"),
  eventCount: byId("event-count"),
};

let connection = null;
let eventCount = 0;

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

// The hub methods a role calls after connecting, with the group each one joins.
function joinPlan(form) {
  const plan = [];
  if (form.role !== "contractor") {
    for (const region of form.regions) {
      plan.push({ method: "JoinDispatchGroup", arg: region, group: `dispatch/${region.toLowerCase()}` });
    }
  }
  if (form.role !== "dispatcher" && form.contractorId) {
    const id = form.contractorId;
    plan.push({ method: "JoinContractorGroup", arg: id, group: `contractor/${id.toLowerCase()}` });
  }
  return plan;
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
    ui.contractorId.value = body.contractorId; // a random dev contractor: join its group
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
}

function showError(text) {
  const item = document.createElement("li");
  item.dataset.testid = "error";
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  ui.errors.prepend(item);
  while (ui.errors.children.length > MAX_ERRORS) ui.errors.lastElementChild.remove();
}

function showGroups(groups) {
  ui.groups.textContent = groups.size ? [...groups].join(", ") : "—";
}

function addRow(type, event) {
  const e = event && typeof event === "object" ? event : { jobId: JSON.stringify(event) };
  const row = document.createElement("tr");
  row.dataset.testid = "event-row";
  row.dataset.type = type;
  row.dataset.jobId = String(e.jobId ?? "");
  const cells = [
    new Date().toLocaleTimeString(undefined, TIME_FORMAT),
    type,
    e.region,
    e.jobId,
    type === "JobAssigned" ? e.contractorId : e.requestId,
  ];
  for (const value of cells) {
    const cell = document.createElement("td");
    cell.textContent = value === undefined || value === null ? "—" : String(value);
    row.append(cell);
  }
  ui.rows.prepend(row);
  while (ui.rows.rows.length > MAX_ROWS) ui.rows.deleteRow(-1);
  ui.eventCount.textContent = String(++eventCount);
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

async function joinGroups(hub, plan, groups) {
  groups.clear(); // a (re)connected connection is a new connection: it is in no group yet
  showGroups(groups);
  for (const { method, arg, group } of plan) {
    try {
      await hub.invoke(method, arg);
      groups.add(group);
    } catch (error) {
      showError(`${method}("${arg}") refused: ${error.message}`);
    }
  }
  showGroups(groups);
}

async function connect(event) {
  event.preventDefault();
  if (connection !== null) return;
  const form = readForm();
  if (form.tokenSource === "paste" && !form.token) {
    showError("Paste a token first (or choose “Fetch a dev token”).");
    return;
  }
  const tracker = { selected: null };
  const groups = new Set();
  const options = { accessTokenFactory: tokenFactory(form) };
  if (form.transport !== "auto") options.transport = signalR.HttpTransportType[form.transport];
  const builder = new signalR.HubConnectionBuilder()
    .withUrl(form.hubUrl, options)
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

  hub.on("RecommendationReady", (e) => addRow("RecommendationReady", e));
  hub.on("JobAssigned", (e) => addRow("JobAssigned", e));
  hub.onreconnecting((error) => {
    setState("reconnecting");
    groups.clear();
    showGroups(groups);
    if (error) showError(`Connection lost, reconnecting: ${error.message}`);
  });
  hub.onreconnected(async () => {
    setState("connected");
    showTransport(form, tracker);
    await joinGroups(hub, joinPlan(form), groups);
  });
  hub.onclose((error) => {
    if (connection === hub) connection = null;
    setState("disconnected");
    groups.clear();
    showGroups(groups);
    ui.connectionId.textContent = "—";
    ui.transportInUse.textContent = "—";
    ui.transportInUse.dataset.transport = "";
    ui.protocolInUse.textContent = "—";
    if (error) showError(`Connection closed: ${error.message}`);
  });

  setState("connecting");
  try {
    await hub.start();
  } catch (error) {
    if (connection === hub) connection = null;
    setState("disconnected");
    showError(`Could not connect: ${error.message}`);
    return;
  }
  setState("connected");
  showTransport(form, tracker);
  ui.protocolInUse.textContent = form.protocol;
  await joinGroups(hub, joinPlan(form), groups);
}

async function disconnect() {
  if (connection !== null) await connection.stop();
}

async function fetchTokenClicked() {
  try {
    await fetchDevToken(readForm());
  } catch (error) {
    showError(error.message);
  }
}

ui.form.addEventListener("submit", connect);
ui.disconnect.addEventListener("click", disconnect);
ui.fetchToken.addEventListener("click", fetchTokenClicked);
ui.role.addEventListener("change", updateRoleFields);
updateRoleFields();
setState("disconnected");
