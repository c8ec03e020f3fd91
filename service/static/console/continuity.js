// Continuity for the official @microsoft/signalr client: keep one position, skip positions already
// seen, resume on start and after every reconnect, reload when the server could not replay.
//
// The hub URL must carry ?positions=true: then every event arrives with its position in the log as
// one extra last argument, and "Checkpoint(position)" moves the position while your groups are quiet.
// Resume(groups, position) joins the groups and replays, in log order, every event of theirs after
// the position; its result says whether that was possible ({recovered, position, replayed, reason}).
// When it was not (away longer than the server keeps, past the replay cap, or the log was recreated),
// reload your state from the source of truth and continue from result.position.
//
// This module is plain JavaScript with no browser or Node specifics: the dispatcher console uses it,
// and the end-to-end tests drive the very same code with Node.

/** The offset of a position ("<offset>:<check>"): positions of one log compare by it. */
export function offsetOf(position) {
  return Number(position.slice(0, position.indexOf(":")));
}

function later(a, b) {
  if (a === null || b === null) return a ?? b;
  return offsetOf(a) >= offsetOf(b) ? a : b;
}

export class Continuity {
  /**
   * @param connection a HubConnection built with a hub URL that has ?positions=true (not started yet)
   * @param options.groups group names to resume into, e.g. ["dispatch/north-america"]
   * @param options.targets client methods to receive, e.g. ["RecommendationReady", "JobAssigned"]
   * @param options.onEvent (target, event, position) => void, once per event
   * @param options.onReload async (result) => void: reload state; called when nothing could be replayed
   * @param options.onResume (result) => void: every Resume's outcome (for display)
   * @param options.onPosition (position) => void: the position moved (e.g. keep it in localStorage)
   * @param options.onError (error) => void: a Resume after a reconnect failed (refused, or the
   *   connection went again); start() and resume() throw instead
   * @param options.position a position kept from before (e.g. in localStorage), or null
   */
  constructor(connection, { groups, targets, onEvent, onReload, onResume, onPosition, onError, position = null }) {
    this.connection = connection;
    this.groups = groups;
    this.position = position;
    this.onEvent = onEvent;
    this.onReload = onReload ?? (async () => {});
    this.onResume = onResume ?? (() => {});
    this.onPosition = onPosition ?? (() => {});
    this.onError = onError ?? (() => {});
    this.resuming = false;
    this.lastDuringResume = null;
    // Whether this connection has resumed into the groups. Until it has, a Checkpoint (sent to every
    // connection with positions, member of a group or not) says nothing about what the groups missed:
    // moving the position to it would skip their events. A reconnect is a new connection.
    this.joined = false;
    for (const target of targets) {
      connection.on(target, (event, eventPosition) => this.receive(target, event, eventPosition));
    }
    connection.on("Checkpoint", (checkpoint) => this.advance(checkpoint));
    connection.onreconnecting(() => {
      this.joined = false;
    });
    connection.onclose(() => {
      this.joined = false;
    });
    connection.onreconnected(() => this.resume().catch((error) => this.onError(error)));
  }

  /** Start the connection and resume from the kept position. */
  async start() {
    await this.connection.start();
    return this.resume();
  }

  /** Join the groups and replay what was missed since this.position. */
  async resume() {
    this.resuming = true;
    this.lastDuringResume = null;
    let result;
    try {
      result = await this.connection.invoke("Resume", this.groups, this.position);
    } catch (error) {
      // The connection went while the replay was arriving: what did arrive was delivered, in order
      // and once each, so the position moves to its last event; the next Resume continues there.
      if (this.lastDuringResume !== null) this.moveTo(this.lastDuringResume);
      throw error;
    } finally {
      this.resuming = false;
    }
    // While the call was in flight the server sent the replay, then live events: all in log order and
    // each once. Where we are now is the later of the last of them and the head the server reports.
    this.joined = true;
    this.moveTo(later(this.lastDuringResume, result.position) ?? this.position);
    if (!result.recovered) await this.onReload(result);
    this.onResume(result);
    return result;
  }

  receive(target, event, position) {
    if (typeof position !== "string") return; // not a positioned event: the URL lacks ?positions=true
    if (this.resuming) {
      this.lastDuringResume = position;
    } else if (this.position !== null && offsetOf(position) <= offsetOf(this.position)) {
      return; // seen already (a duplicate at the edge of a reconnect)
    } else {
      this.moveTo(position);
    }
    this.onEvent(target, event, position);
  }

  advance(checkpoint) {
    if (this.resuming) {
      this.lastDuringResume = checkpoint;
    } else if (!this.joined) {
      return; // not in the groups yet (see the constructor)
    } else if (this.position === null || offsetOf(checkpoint) > offsetOf(this.position)) {
      this.moveTo(checkpoint);
    }
  }

  moveTo(position) {
    if (position === this.position) return;
    this.position = position;
    this.onPosition(position);
  }
}
