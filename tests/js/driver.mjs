// Drives the official, unmodified @microsoft/signalr client for the Python interop tests.
//
// Line protocol on stdin/stdout, one JSON object per line:
//   in:  {"id": 1, "cmd": "connect", "name": "c1", "url": "...", "token": "...", "transport": "WebSockets",
//         "protocol": "json" | "messagepack", "skipNegotiation": false, "statefulReconnect": false,
//         "automaticReconnect": false | true | [0, 500], "listen": ["RecommendationReady"], ...}
//        {"id": 2, "cmd": "invoke" | "send", "name": "c1", "method": "JoinDispatchGroup", "args": ["north"]}
//        {"id": 3, "cmd": "stop" | "state", "name": "c1"}    {"id": 4, "cmd": "setToken", "name": "c1", "token": "..."}
//        connect with "continuity": {"groups": [...], "position": null} runs the console's Continuity
//        (service/static/console/continuity.js) on the connection: "listen" events then arrive once
//        each with their position, and every Resume outcome is reported as {"event": "resumed", ...}.
//   out: {"id": 1, "ok": true, ...} | {"id": 1, "ok": false, "error": "..."}
//        {"event": "message" | "reconnecting" | "reconnected" | "close", "name": "c1", ...}
// The driver never decides anything: the Python test asserts on what it reports.
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import readline from "node:readline";
import { Continuity } from "../../service/static/console/continuity.js";

const connections = new Map();
const tokens = new Map();

function emit(obj) {
  process.stdout.write(JSON.stringify(obj, (_k, v) => (v instanceof Uint8Array ? Array.from(v) : v)) + "\n");
}

function errorText(err) {
  if (err === undefined || err === null) return null;
  return err && err.message !== undefined ? String(err.message) : String(err);
}

const TRANSPORTS = {
  WebSockets: signalR.HttpTransportType.WebSockets,
  ServerSentEvents: signalR.HttpTransportType.ServerSentEvents,
  LongPolling: signalR.HttpTransportType.LongPolling,
};

function transportOf(spec) {
  if (spec === undefined || spec === null || spec === "auto") return undefined;
  if (Array.isArray(spec)) return spec.reduce((acc, name) => acc | TRANSPORTS[name], 0);
  return TRANSPORTS[spec];
}

async function connect(msg) {
  tokens.set(msg.name, msg.token ?? null);
  const options = {
    transport: transportOf(msg.transport),
    skipNegotiation: Boolean(msg.skipNegotiation),
    logger: msg.logLevel !== undefined ? msg.logLevel : signalR.LogLevel.None,
  };
  if (msg.token !== undefined && msg.token !== null) {
    options.accessTokenFactory = () => tokens.get(msg.name);
  }
  if (msg.headers) options.headers = msg.headers;
  let builder = new signalR.HubConnectionBuilder().withUrl(msg.url, options);
  if (msg.protocol === "messagepack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
  if (msg.statefulReconnect) builder = builder.withStatefulReconnect();
  if (msg.automaticReconnect === true) builder = builder.withAutomaticReconnect();
  else if (Array.isArray(msg.automaticReconnect)) builder = builder.withAutomaticReconnect(msg.automaticReconnect);
  if (msg.serverTimeoutMs) builder = builder.withServerTimeout(msg.serverTimeoutMs);
  if (msg.keepAliveMs) builder = builder.withKeepAliveInterval(msg.keepAliveMs);
  const connection = builder.build();
  connection.onreconnecting((err) => emit({ event: "reconnecting", name: msg.name, error: errorText(err) }));
  connection.onreconnected((id) => emit({ event: "reconnected", name: msg.name, connectionId: id ?? null }));
  connection.onclose((err) => emit({ event: "close", name: msg.name, error: errorText(err) }));
  connections.set(msg.name, connection);
  if (msg.continuity) {
    const continuity = new Continuity(connection, {
      groups: msg.continuity.groups,
      targets: msg.listen ?? [],
      position: msg.continuity.position ?? null,
      onEvent: (target, event, position) => emit({ event: "message", name: msg.name, target, args: [event, position] }),
      onResume: (result) => emit({ event: "resumed", name: msg.name, result }),
    });
    const result = await continuity.start();
    return { connectionId: connection.connectionId ?? null, state: connection.state, resumed: result };
  }
  for (const target of msg.listen ?? []) {
    connection.on(target, (...args) => emit({ event: "message", name: msg.name, target, args }));
  }
  await connection.start();
  return { connectionId: connection.connectionId ?? null, state: connection.state };
}

function get(name) {
  const connection = connections.get(name);
  if (!connection) throw new Error(`no connection named ${name}`);
  return connection;
}

async function handle(msg) {
  switch (msg.cmd) {
    case "connect":
      return connect(msg);
    case "invoke":
      return { result: (await get(msg.name).invoke(msg.method, ...(msg.args ?? []))) ?? null };
    case "send":
      await get(msg.name).send(msg.method, ...(msg.args ?? []));
      return {};
    case "stop":
      await get(msg.name).stop();
      return {};
    case "state": {
      const c = get(msg.name);
      return { state: c.state, connectionId: c.connectionId ?? null };
    }
    case "setToken":
      tokens.set(msg.name, msg.token);
      return {};
    case "exit":
      setImmediate(() => process.exit(0));
      return {};
    default:
      throw new Error(`unknown command ${msg.cmd}`);
  }
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (err) {
    emit({ event: "driver_error", error: `bad command line: ${errorText(err)}` });
    return;
  }
  handle(msg).then(
    (value) => emit({ id: msg.id, ok: true, ...value }),
    (err) => emit({ id: msg.id, ok: false, error: errorText(err) }),
  );
});
rl.on("close", async () => {
  await Promise.allSettled([...connections.values()].map((c) => c.stop()));
  process.exit(0);
});
emit({ event: "ready", signalr: signalR.VERSION });
