// The signaling connections: exactly one per kind ("voice", "events").
//
// Opening a connection of a kind first closes the existing one of that kind.
// After an unexpected drop a connection reconnects with exponential backoff
// and jitter: a voice connection first resumes its participant with the
// server's resume token (contract 1.1: same peer id, the others see nothing;
// `media: "restart"` when its peer connections failed), and joins afresh
// when the server no longer knows the token (4410), its worker or node died
// (1011) or the resume window has passed. Never after a deliberate leave, a
// 4001 (the same user connected elsewhere: "replaced"), a 4401 (bad token) or
// a 4403 (forbidden).

import { ErrorLog, logger } from "./log.js";

const log = logger("websocket");

export const CLOSE = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  REPLACED: 4001,
  UNAUTHORIZED: 4401,
  FORBIDDEN: 4403,
  TIMEOUT: 4408,
  RATE_LIMITED: 4429,
  TRY_AGAIN_LATER: 1013,
  KICKED: 4003,
  RESUME_REFUSED: 4410,
  MEDIA_LOST: 1011,
};

/** Close codes after which the server no longer knows the participant:
 * join afresh at once (1011: the worker or node holding the channel died). */
const FORGOTTEN = new Set([CLOSE.RESUME_REFUSED, CLOSE.MEDIA_LOST]);

/** Close codes after which a connection must not come back by itself. */
const FINAL = {
  [CLOSE.REPLACED]: "replaced",
  [CLOSE.UNAUTHORIZED]: "unauthorized",
  [CLOSE.FORBIDDEN]: "forbidden",
  [CLOSE.KICKED]: "kicked",
};

/** Join errors that retrying cannot fix. */
const FINAL_JOIN_ERRORS = new Set(["bad_message", "forbidden", "channel_full"]);

export const DEFAULTS = {
  joinTimeout: 10000, // socket open + joined
  requestTimeout: 10000,
  pingInterval: 10000, // application heartbeat (browsers hide WebSocket pings)
  staleAfter: 25000, // nothing received for this long: the socket is dead
  backoffBase: 500,
  backoffMax: 30000,
  leaveTimeout: 2000,
  resumeWindow: 12000, // resume this long after a drop (the server keeps us 15 s)
};

export class ServerError extends Error {
  constructor(message) {
    super(`${message.code}: ${message.message}`);
    this.name = "ServerError";
    this.code = message.code;
    this.reply = message;
  }
}

let socketCounter = 0;

function defaultUrl() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/ws`;
}

/**
 * One signaling connection of one kind. Events (CustomEvent, data in `detail`):
 * - `message`: every message from the server
 * - `joined`: `{message, rejoin, resumed}` each time a join or resume succeeds;
 *   `resumed` is the resume's media mode ("keep" | "restart"), null after a join
 * - `state`: `{state}`: connecting | joined | reconnecting | closed
 * - `disconnected`: `{code, reason, delay}`: dropped unexpectedly, reconnecting in `delay` ms
 * - `closed`: `{code, reason, why}`: gone for good; why = left | replaced |
 *   unauthorized | forbidden | join_failed | superseded
 */
export class SignalingConnection extends EventTarget {
  constructor(kind, { token, channel, url = defaultUrl(), ...options }) {
    super();
    this.kind = kind;
    this.url = url;
    this.channel = channel;
    this.options = { ...DEFAULTS, ...options };
    this._token = token; // never logged
    this.state = "idle";
    this.ws = null;
    this.socketId = null;
    this.peerId = null;
    this.attempt = 0; // consecutive failed (re)connects
    this.reconnects = 0;
    this.resumes = 0;
    this.resumeToken = null; // what the next resume takes (voice only)
    this.lostAt = null; // when the joined socket was lost
    this.resumeMedia = "keep"; // "restart": the peer connections failed
    this.deliberate = false;
    this.lastClose = null;
    this.lastJoined = null;
    this.messagesIn = 0;
    this.messagesOut = 0;
    this.lastReceivedAt = 0;
    this.errors = new ErrorLog();
    this._seq = 0;
    this._pending = new Map();
    this._timers = {};
    this._closedWaiters = [];
    this.ready = new Promise((resolve, reject) => {
      this._ready = { resolve, reject };
    });
    this.ready.catch(() => {}); // a caller may not wait for it
  }

  // --- lifecycle -------------------------------------------------------------------

  start() {
    if (this.state === "idle") this._open();
    return this.ready;
  }

  _setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state } }));
  }

  _open() {
    const ws = new WebSocket(this.url);
    this.ws = ws;
    this.socketId = ++socketCounter;
    this._setState(this.lastJoined ? "reconnecting" : "connecting");
    log.info(`${this.kind}: connecting (socket #${this.socketId}, attempt ${this.attempt + 1})`);
    this._timers.join = setTimeout(
      () => this._drop(ws, `no joined within ${this.options.joinTimeout} ms`),
      this.options.joinTimeout,
    );
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.lastReceivedAt = performance.now();
      this._joinId = this._nextId();
      if (this._resumable()) {
        this.resuming = this.resumeMedia;
        log.info(`${this.kind}: resuming ${this.peerId} (${this.resuming} media)`);
        this._send({
          type: "resume",
          id: this._joinId,
          resume_token: this.resumeToken,
          media: this.resuming,
        });
        return;
      }
      this.resuming = null;
      this._send({
        type: "join",
        id: this._joinId,
        token: this._token,
        channel: this.channel,
        kind: this.kind,
      });
    };
    ws.onmessage = (event) => this._onMessage(ws, event);
    ws.onclose = (event) => this._onClose(ws, event.code, event.reason);
    ws.onerror = () => {
      if (ws === this.ws) log.warn(`${this.kind}: socket #${this.socketId} error`);
    };
  }

  _onMessage(ws, event) {
    if (ws !== this.ws) return;
    this.messagesIn += 1;
    this.lastReceivedAt = performance.now();
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      this.errors.add("bad_json", "the server sent a frame that is not JSON");
      log.error(`${this.kind}: a frame that is not JSON`);
      return;
    }
    if (message.type === "joined" || message.type === "resumed") {
      this._onJoined(message);
    } else if (message.type === "error") {
      this.errors.add(message.code, message.message, { ref: message.ref });
      if (message.ref !== undefined && message.ref === this._joinId) {
        this._onJoinError(message);
        return;
      }
      log.warn(`${this.kind}: server error ${message.code}: ${message.message}`);
    }
    const waiter = message.ref != null ? this._pending.get(message.ref) : undefined;
    if (waiter) {
      this._pending.delete(message.ref);
      clearTimeout(waiter.timer);
      if (message.type === "error") waiter.reject(new ServerError(message));
      else waiter.resolve(message);
    }
    this.dispatchEvent(new CustomEvent("message", { detail: message }));
  }

  _onJoined(message) {
    clearTimeout(this._timers.join);
    const rejoin = this.lastJoined !== null;
    const resumed = message.type === "resumed" ? this.resuming : null;
    this.lastJoined = message;
    this.peerId = message.peer_id ?? null;
    this.resumeToken = message.resume_token ?? null;
    this.resumeMedia = "keep";
    this.lostAt = null;
    this.attempt = 0;
    if (resumed) this.resumes += 1;
    this._setState("joined");
    this._startHeartbeat();
    const verb = resumed ? `resumed (${resumed} media)` : rejoin ? "joined again" : "joined";
    log.success(`${this.kind}: ${verb} ${message.channel}` + (this.peerId ? ` as ${this.peerId}` : ""));
    this._ready.resolve(message);
    this.dispatchEvent(new CustomEvent("joined", { detail: { message, rejoin, resumed } }));
  }

  /** Whether the next socket resumes (a token, inside the window) rather than joins. */
  _resumable() {
    return (
      this.resumeToken !== null &&
      this.lostAt !== null &&
      performance.now() - this.lostAt < this.options.resumeWindow
    );
  }

  _onJoinError(message) {
    const text = `join refused: ${message.code}: ${message.message}`;
    if (FINAL_JOIN_ERRORS.has(message.code)) {
      log.error(`${this.kind}: ${text}`);
      this._finish(message.code, text, "join_failed", new ServerError(message));
    } else {
      this._drop(this.ws, text);
    }
  }

  _startHeartbeat() {
    clearInterval(this._timers.ping);
    this._timers.ping = setInterval(() => {
      const silent = performance.now() - this.lastReceivedAt;
      if (silent > this.options.staleAfter) {
        this._drop(this.ws, `nothing received for ${Math.round(silent)} ms`);
      } else {
        this._send({ type: "ping" });
      }
    }, this.options.pingInterval);
  }

  _clearTimers() {
    for (const timer of Object.values(this._timers)) {
      clearTimeout(timer);
      clearInterval(timer);
    }
    this._timers = {};
  }

  /** Give up on a socket we consider dead (timeout), then treat it as dropped. */
  _drop(ws, reason) {
    if (!ws || ws !== this.ws) return;
    log.warn(`${this.kind}: ${reason}: dropping socket #${this.socketId}`);
    this._detach(ws);
    try {
      ws.close(4000, reason.slice(0, 100));
    } catch {
      /* already closing */
    }
    this._onClose(ws, 4000, reason, true);
  }

  _detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
  }

  _onClose(ws, code, reason, local = false) {
    if (ws !== this.ws) return;
    this._detach(ws);
    this.ws = null;
    this._clearTimers();
    this.lastClose = { code, reason, local, at: Date.now() / 1000 };
    this._rejectPending(new Error(`connection closed (${code})`));
    for (const resolve of this._closedWaiters.splice(0)) resolve();
    if (this.state === "joined") this.lostAt = performance.now();
    if (FORGOTTEN.has(code)) {
      log.warn(`${this.kind}: the server no longer knows this participant: joining afresh`);
      this.resumeToken = null;
    }
    if (this.deliberate) {
      this._finish(code, reason, this._why ?? "left");
      return;
    }
    const why = FINAL[code];
    if (why) {
      const text =
        why === "replaced"
          ? "you joined from another tab or device"
          : `${why} (${code}${reason ? `: ${reason}` : ""})`;
      (why === "replaced" ? log.warn : log.error)(`${this.kind}: closed: ${text}`);
      this.errors.add(why, text, { code });
      this._finish(code, reason, why);
      return;
    }
    this.attempt += 1;
    if (FORGOTTEN.has(code)) this.attempt = 0; // join at once
    const exp = Math.min(
      this.options.backoffMax,
      this.options.backoffBase * 2 ** (this.attempt - 1),
    );
    const delay = FORGOTTEN.has(code) ? 0 : Math.round(exp * (0.5 + Math.random()));
    this.errors.add("disconnected", `closed ${code}${reason ? `: ${reason}` : ""}`);
    log.warn(
      `${this.kind}: connection lost (${code}${reason ? ` ${reason}` : ""}); ` +
        `reconnecting in ${delay} ms (attempt ${this.attempt})`,
    );
    this.reconnectAt = performance.now() + delay;
    this._setState("reconnecting");
    this._timers.reconnect = setTimeout(() => {
      this.reconnectAt = null;
      this.reconnects += 1;
      this._open();
    }, delay);
    this.dispatchEvent(
      new CustomEvent("disconnected", { detail: { code, reason, delay, attempt: this.attempt } }),
    );
  }

  _finish(code, reason, why, error = undefined) {
    const ws = this.ws;
    this._clearTimers();
    this.reconnectAt = null;
    if (ws) {
      this._detach(ws);
      this.ws = null;
      try {
        ws.close(1000);
      } catch {
        /* closing already */
      }
    }
    this._rejectPending(new Error(`connection closed (${why})`));
    if (this.state === "closed") return;
    this._setState("closed");
    this._ready.reject(error ?? new Error(`signaling closed: ${why}`));
    this.dispatchEvent(new CustomEvent("closed", { detail: { code, reason, why, error } }));
  }

  _rejectPending(error) {
    for (const waiter of this._pending.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
    this._pending.clear();
  }

  /**
   * Leave on purpose: send `leave` when joined, wait (bounded) for the server to
   * close, and never reconnect.
   */
  async leave(why = "left") {
    this.deliberate = true;
    this._why = why;
    clearTimeout(this._timers.reconnect);
    const ws = this.ws;
    if (!ws) {
      this._finish(null, "", why);
      return;
    }
    const closed = new Promise((resolve) => this._closedWaiters.push(resolve));
    if (ws.readyState === WebSocket.OPEN && this.state === "joined") {
      this._send({ type: "leave" });
    } else {
      ws.close(1000);
    }
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(resolve, this.options.leaveTimeout);
    });
    await Promise.race([closed, timeout]);
    clearTimeout(timer);
    if (this.ws === ws) this._finish(1000, "left", why); // the server did not close in time
  }

  /**
   * Drop the socket now and reconnect (backoff) as after an unexpected drop;
   * `media: "restart"`: the peer connections failed, the resume brings new ones.
   */
  restart(reason, media = "keep") {
    if (media === "restart") this.resumeMedia = "restart";
    if (this.ws) this._drop(this.ws, reason);
  }

  /** The network is back (the browser's `online`): reconnect now, not at the backoff's end. */
  reconnectNow() {
    if (this.state !== "reconnecting" || this.ws) return;
    clearTimeout(this._timers.reconnect);
    this.reconnectAt = null;
    this.reconnects += 1;
    this._open();
  }

  // --- sending ---------------------------------------------------------------------

  _nextId() {
    this._seq += 1;
    return `${this.kind[0]}${this._seq}`;
  }

  _send(message) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(message));
    this.messagesOut += 1;
    return true;
  }

  /** Send a message on the joined connection; false if it is not joined now. */
  send(message) {
    if (this.state !== "joined") {
      log.debug(`${this.kind}: not joined: dropped ${message.type}`);
      return false;
    }
    return this._send(message);
  }

  /** Send with an `id` and wait for the reply naming it (an `error` rejects). */
  request(message, timeout = this.options.requestTimeout) {
    const id = this._nextId();
    return new Promise((resolve, reject) => {
      if (!this.send({ ...message, id })) {
        reject(new Error(`${this.kind} signaling is not connected`));
        return;
      }
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new Error(`no reply to ${message.type} within ${timeout} ms`));
      }, timeout);
      this._pending.set(id, { resolve, reject, timer });
    });
  }

  getDebugInfo() {
    const now = performance.now();
    return {
      kind: this.kind,
      state: this.state,
      url: this.url,
      channel: this.channel,
      socketId: this.socketId,
      peerId: this.peerId,
      readyState: this.ws ? this.ws.readyState : null,
      attempt: this.attempt,
      reconnects: this.reconnects,
      resumes: this.resumes,
      resumable: this._resumable(),
      reconnectIn: this.reconnectAt ? Math.max(0, Math.round(this.reconnectAt - now)) : null,
      messagesIn: this.messagesIn,
      messagesOut: this.messagesOut,
      lastReceivedAgo: this.lastReceivedAt ? Math.round(now - this.lastReceivedAt) : null,
      pendingRequests: this._pending.size,
      lastClose: this.lastClose,
      errors: this.errors.toJSON(),
    };
  }
}

/** The registry: at most one connection per kind. */
class WebSocketService {
  constructor() {
    this.connections = new Map();
    this._queue = Promise.resolve();
  }

  /**
   * Open the connection of `kind` (closing the existing one of that kind first)
   * and start joining. Resolves with the connection; await `connection.ready` for
   * the first `joined`.
   */
  connect(kind, options) {
    const run = async () => {
      const old = this.connections.get(kind);
      if (old && old.state !== "closed") {
        log.info(`${kind}: closing the previous connection first`);
        await old.leave("superseded");
      }
      const connection = new SignalingConnection(kind, options);
      this.connections.set(kind, connection);
      connection.start();
      return connection;
    };
    const result = this._queue.then(run, run);
    this._queue = result.catch(() => {});
    return result;
  }

  get(kind) {
    return this.connections.get(kind) ?? null;
  }

  async disconnect(kind) {
    const connection = this.connections.get(kind);
    if (connection) await connection.leave();
  }

  getDebugInfo() {
    const info = {};
    for (const [kind, connection] of this.connections) info[kind] = connection.getDebugInfo();
    return info;
  }
}

export const websocketService = new WebSocketService();
