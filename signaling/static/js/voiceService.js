// Voice and screen share: a publish RTCPeerConnection the client offers on, and a
// subscribe RTCPeerConnection that only answers the server's offers.
//
// The subscribe offer's `tracks` map ({mid: {peer_id, source}}) says what each
// m-line carries; m-lines absent from it are inactive and may later carry another
// participant, so the mapping is rebuilt on every offer.
//
// A lost socket does not end the call (contract 1.1): the peer connections
// keep playing while signaling resumes the same participant; peer connections
// that failed (or a network that came back) make the resume bring new ones,
// under the same publications, so the others notice nothing.

import { ErrorLog, logger } from "./log.js";
import { websocketService } from "./websocketService.js";

const log = logger("voice");
const screenLog = logger("screen");
const statsLog = logger("stats");

export const TIMEOUTS = {
  gather: 5000, // ICE gathering must complete
  connect: 10000, // a peer connection must reach "connected"
  negotiate: 10000, // the server must answer a publish offer
  disconnected: 5000, // "disconnected" this long counts as failed
};
export const STATS_INTERVAL = 2000;
const MAX_MEDIA_RESTARTS = 3;
const STATS_BYTES = 15000; // the server takes 16 KiB per stats message

const PC_CONFIG = { bundlePolicy: "max-bundle", rtcpMuxPolicy: "require" };

/** The claims of a JWT, without checking it (only to show our own name). */
export function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(Math.ceil(part.length / 4) * 4, "=")));
  } catch {
    return {};
  }
}

function round(value, digits = 6) {
  return typeof value === "number" ? Number(value.toPrecision(digits)) : value;
}

function pcInfo(pc) {
  if (!pc) return null;
  return {
    connectionState: pc.connectionState,
    iceConnectionState: pc.iceConnectionState,
    iceGatheringState: pc.iceGatheringState,
    signalingState: pc.signalingState,
    transceivers: pc.getTransceivers().map((t) => ({
      mid: t.mid,
      kind: t.receiver.track?.kind,
      direction: t.direction,
      currentDirection: t.currentDirection,
      sending: t.sender.track ? t.sender.track.kind : null,
    })),
  };
}

function trackInfo(track, source) {
  if (!track) return null;
  return {
    source,
    kind: track.kind,
    id: track.id,
    label: track.label,
    enabled: track.enabled,
    muted: track.muted,
    readyState: track.readyState,
  };
}

/** The selected candidate pair of a getStats report, if any. */
function selectedPair(stats) {
  let pair = null;
  stats.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) {
      pair = stats.get(s.selectedCandidatePairId) ?? pair;
    }
  });
  if (!pair) {
    stats.forEach((s) => {
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s;
    });
  }
  return pair;
}

/** A candidate of a getStats report as the debug API shows it. */
function candidateInfo(stats, id) {
  const c = id ? stats.get(id) : null;
  if (!c) return null;
  return {
    candidateType: c.candidateType,
    address: c.address ?? c.ip,
    port: c.port,
    protocol: c.protocol,
    relayProtocol: c.relayProtocol,
  };
}

/**
 * The path a connection's media takes: its selected candidate pair, with the
 * local and remote candidate (`local.candidateType === "relay"`: through TURN).
 */
function pathOf(stats) {
  const pair = selectedPair(stats);
  if (!pair) return null;
  return {
    currentRoundTripTime: pair.currentRoundTripTime,
    local: candidateInfo(stats, pair.localCandidateId),
    remote: candidateInfo(stats, pair.remoteCandidateId),
  };
}

export class VoiceService extends EventTarget {
  constructor() {
    super();
    this.state = "idle";
    this.connection = null;
    this.token = null; // for the HTTP APIs; never logged
    this.session = 0; // bumped whenever media is torn down: stale callbacks stop
    this.channel = null;
    this.peerId = null;
    this.self = null; // {user_id, name}
    this.participants = new Map(); // peer_id -> participant (+ speaking, level)
    this.iceServers = [];
    this.publishPc = null;
    this.subscribePc = null;
    this.micStream = null;
    this.micTrack = null;
    this.micTransceiver = null;
    this.screenStream = null;
    this.screenTrack = null;
    this.screenTransceiver = null;
    this.localScreenElement = null;
    this.tracksMap = {}; // the last subscribe offer's tracks
    this.remote = new Map(); // mid -> {mid, peer_id, source, kind, track, element}
    this.muted = false;
    this.deafened = false;
    this.processing = true; // echo cancellation, noise suppression, auto gain
    this.micDeviceId = "";
    this.micError = null;
    this.errors = new ErrorLog();
    this.lastStats = null;
    this.statsSent = 0;
    this.closeReason = null;
    this.mediaRestarts = 0;
    this._pcs = {}; // name -> {pc, signaled, queue, timers}
    this._publishChain = Promise.resolve();
    this._subscribeChain = Promise.resolve();
    this._statsTimer = null;
    this._audioUnlock = null;
    this._joinAttempt = 0;
    this.audioContainer = null;
    // the network came back (maybe another one): new peer connections at once
    globalThis.addEventListener?.("online", () => this._onNetworkBack());
  }

  // --- small helpers ---------------------------------------------------------------

  _emit(what, detail = {}) {
    this.dispatchEvent(new CustomEvent("change", { detail: { what, ...detail } }));
  }

  _notice(level, text, code = undefined) {
    if (level === "error") this.errors.add(code ?? "error", text);
    this.dispatchEvent(new CustomEvent("notice", { detail: { level, text, code } }));
  }

  _setState(state, detail = {}) {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    if (state === "connected") log.success(`media connected in ${this.channel}`);
    else log.info(`state ${previous} -> ${state}`);
    this.dispatchEvent(new CustomEvent("state", { detail: { state, previous, ...detail } }));
  }

  /** Whether the token's rights (`can`: speak, screen, listen) include `right`. */
  may(right) {
    const can = tokenClaims(this.token ?? "").can;
    return !Array.isArray(can) || can.includes(right);
  }

  get inCall() {
    return ["joining", "connecting", "connected", "reconnecting"].includes(this.state);
  }

  _audioConstraints() {
    const processing = this.processing;
    const audio = {
      echoCancellation: processing,
      noiseSuppression: processing,
      autoGainControl: processing,
    };
    if (this.micDeviceId) audio.deviceId = { exact: this.micDeviceId };
    return audio;
  }

  _container() {
    if (!this.audioContainer || !this.audioContainer.isConnected) {
      this.audioContainer = document.createElement("div");
      this.audioContainer.id = "miscord-remote-audio";
      this.audioContainer.hidden = true;
      document.body.appendChild(this.audioContainer);
    }
    return this.audioContainer;
  }

  // --- microphone ------------------------------------------------------------------

  /** Audio inputs (labels are empty until the microphone permission is granted). */
  async listMicrophones() {
    if (!navigator.mediaDevices?.enumerateDevices) return [];
    const devices = await navigator.mediaDevices.enumerateDevices();
    return devices.filter((d) => d.kind === "audioinput");
  }

  async _openMicrophone() {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new Error("this page has no access to media devices (is it served over https?)");
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: this._audioConstraints() });
    } catch (err) {
      if (err.name === "OverconstrainedError" && this.micDeviceId) {
        log.warn(`microphone ${this.micDeviceId} is gone: using the default one`);
        this.micDeviceId = "";
        stream = await navigator.mediaDevices.getUserMedia({ audio: this._audioConstraints() });
      } else {
        throw err;
      }
    }
    const track = stream.getAudioTracks()[0];
    track.enabled = !this.muted;
    track.addEventListener("ended", () => this._onMicrophoneEnded(track));
    log.success(`microphone: ${track.label || "default"} (processing ${this.processing ? "on" : "off"})`);
    return { stream, track };
  }

  async _acquireMicrophone() {
    if (this.micTrack?.readyState === "live") return;
    const attempt = this._joinAttempt;
    try {
      const { stream, track } = await this._openMicrophone();
      if (attempt !== this._joinAttempt) {
        track.stop(); // left while the browser asked for the microphone
        return;
      }
      this.micStream = stream;
      this.micTrack = track;
      this.micError = null;
    } catch (err) {
      this.micError = { name: err.name, message: err.message };
      log.error(`no microphone: ${err.name}: ${err.message}`);
      this._notice(
        "error",
        err.name === "NotAllowedError"
          ? "Microphone access was denied: you can listen, but nobody hears you."
          : `No microphone (${err.message}): you can listen, but nobody hears you.`,
        "no_microphone",
      );
    }
  }

  /** The microphone went away (unplugged, revoked): fall back to the default one. */
  async _onMicrophoneEnded(track) {
    if (track !== this.micTrack || !this.inCall) return;
    log.warn(`microphone "${track.label}" ended (unplugged or revoked)`);
    this._emit("local");
    try {
      this.micDeviceId = "";
      await this._reopenMicrophone();
      this._notice("warning", `Your microphone stopped; now using "${this.micTrack.label}".`, "mic_ended");
    } catch (err) {
      this._notice("error", `Your microphone stopped and no other works (${err.message}).`, "mic_ended");
    }
  }

  /** Swap the microphone (a deviceId from listMicrophones; "" = default). */
  async setMicrophone(deviceId) {
    this.micDeviceId = deviceId;
    if (!this.micTrack && !this.inCall) return;
    await this._reopenMicrophone();
  }

  /** Turn the browser's echo cancellation / noise suppression / gain control on or off. */
  async setAudioProcessing(enabled) {
    this.processing = Boolean(enabled);
    if (this.micTrack) await this._reopenMicrophone();
  }

  async _reopenMicrophone() {
    const { stream, track } = await this._openMicrophone();
    const old = this.micTrack;
    this.micStream = stream;
    this.micTrack = track;
    this.micError = null;
    const transceiver = this.micTransceiver;
    if (transceiver && this.publishPc && this.publishPc.signalingState !== "closed") {
      await transceiver.sender.replaceTrack(track);
      if (transceiver.direction !== "sendonly") {
        transceiver.direction = "sendonly";
        await this._negotiatePublish();
      }
    }
    old?.stop();
    log.info(`microphone switched to "${track.label}"`);
    this._emit("local");
  }

  // --- joining and leaving ---------------------------------------------------------

  /**
   * Join `channel` with `token`. Resolves once signaling joined (media then
   * connects in the background; watch the `state` event).
   */
  async join({ token, channel }) {
    if (this.inCall) await this.leave();
    const claims = tokenClaims(token);
    this.token = token;
    this.self = { user_id: claims.sub ?? "me", name: claims.name ?? claims.sub ?? "me" };
    this.channel = channel;
    this.closeReason = null;
    this.mediaRestarts = 0;
    this.errors = new ErrorLog();
    this._setState("joining");
    const attempt = ++this._joinAttempt;
    const aborted = () => attempt !== this._joinAttempt;
    await this._acquireMicrophone();
    if (aborted()) throw new Error("the join was cancelled");
    const connection = await websocketService.connect("voice", { token, channel });
    if (aborted()) {
      connection.leave("superseded");
      throw new Error("the join was cancelled");
    }
    this.connection = connection;
    connection.addEventListener("joined", (e) => {
      if (connection !== this.connection) return;
      if (e.detail.resumed === "keep") this._onResumed(e.detail.message);
      else this._onJoined(e.detail.message, e.detail.rejoin);
    });
    connection.addEventListener("message", (e) => {
      if (connection === this.connection) this._onMessage(e.detail);
    });
    connection.addEventListener("disconnected", (e) => {
      if (connection === this.connection) this._onDisconnected(e.detail);
    });
    connection.addEventListener("closed", (e) => {
      if (connection === this.connection) this._onClosed(e.detail);
    });
    try {
      return await connection.ready;
    } catch (err) {
      if (connection === this.connection) this._onClosed({ why: "join_failed", error: err });
      throw err;
    }
  }

  /** Leave on purpose: `leave`, close both connections, stop every local track. */
  async leave() {
    this._joinAttempt += 1; // a join still on its way gives up
    const connection = this.connection;
    this.connection = null;
    const leaving = connection?.leave(); // sends `leave` at once
    this._teardownMedia();
    this._stopLocalTracks();
    await leaving;
    this.participants.clear();
    this.peerId = null;
    this._setState("left");
    this._emit("all");
    log.info(`left ${this.channel}`);
  }

  _onJoined(message, rejoin) {
    this._teardownMedia();
    this.peerId = message.peer_id;
    this.channel = message.channel;
    this.iceServers = message.ice_servers ?? [];
    this.participants = new Map();
    for (const p of message.participants) this._addParticipant(p);
    this.participants.set(this.peerId, {
      peer_id: this.peerId,
      user_id: this.self.user_id,
      name: this.self.name,
      tracks: [],
      self: true,
      speaking: false,
      level: 0,
    });
    this._setState("connecting", { rejoin });
    this._emit("all");
    const session = this.session;
    if (this.muted) this.connection.send({ type: "mute", source: "microphone", muted: true });
    this._startPublish(session).catch((err) => {
      if (session !== this.session) return;
      this._mediaFailed(`publishing failed: ${err.message}`);
    });
    this._startStats();
  }

  /** A resume kept our peer connections: the call goes on; catch up on who is here. */
  _onResumed(message) {
    this.iceServers = message.ice_servers ?? this.iceServers;
    const present = new Set(message.participants.map((p) => p.peer_id));
    for (const [peerId, p] of this.participants) {
      if (!p.self && !present.has(peerId)) this._forget(peerId);
    }
    for (const p of message.participants) {
      const known = this.participants.get(p.peer_id);
      this._addParticipant(p);
      if (known) Object.assign(this.participants.get(p.peer_id), { speaking: known.speaking, level: known.level });
    }
    if (this.muted) this.connection.send({ type: "mute", source: "microphone", muted: true });
    log.success(`resumed in ${this.channel}: the call went on`);
    const pcs = Object.values(this._pcs).map((e) => e.pc);
    const connected = pcs.length && pcs.every((pc) => pc.connectionState === "connected");
    this._setState(connected ? "connected" : "connecting", { resumed: true });
    this._emit("all");
  }

  _onDisconnected({ code, delay }) {
    // the peer connections go on playing: a resume keeps them
    this._setState("reconnecting", { code, delay });
    this._notice("warning", "Connection lost: reconnecting…", "reconnecting");
    this._emit("all");
  }

  _onNetworkBack() {
    if (!this.connection || !this.inCall) return;
    log.warn("the network is back: resuming with new peer connections");
    this.connection.restart("the network changed", "restart");
    this.connection.reconnectNow();
  }

  _onClosed({ why, code, error }) {
    this.connection = null;
    this._teardownMedia();
    this._stopLocalTracks();
    this.participants.clear();
    this.closeReason = why;
    const texts = {
      replaced: "You joined from another tab or device, so this one left the call.",
      unauthorized: "Your sign-in is not valid (expired?). Sign in again.",
      forbidden: "You may not join this channel.",
      kicked: "A moderator removed you from the call.",
      join_failed: `Could not join: ${error?.message ?? "refused"}`,
    };
    if (why !== "left" && why !== "superseded") {
      this._notice(why === "replaced" ? "warning" : "error", texts[why] ?? `Disconnected (${code})`, why);
    }
    this._setState("closed", { why });
    this._emit("all");
  }

  _teardownMedia() {
    this.session += 1;
    this._stopStats();
    for (const name of Object.keys(this._pcs)) this._closePc(name);
    this.publishPc = this.subscribePc = null;
    this.micTransceiver = this.screenTransceiver = null;
    for (const mid of [...this.remote.keys()]) this._removeRemote(mid);
    this.tracksMap = {};
    this._publishChain = Promise.resolve();
    this._subscribeChain = Promise.resolve();
    this.audioContainer?.remove();
    this.audioContainer = null;
  }

  _stopLocalTracks() {
    for (const track of [this.micTrack, this.screenTrack]) track?.stop();
    this.micTrack = this.micStream = null;
    this.screenTrack = this.screenStream = null;
    this._removeLocalScreen();
    this._emit("local");
  }

  // --- peer connections ------------------------------------------------------------

  _newPc(name, session) {
    const pc = new RTCPeerConnection({ ...PC_CONFIG, iceServers: this.iceServers });
    const entry = { pc, signaled: false, queue: [], timers: {} };
    this._pcs[name] = entry;
    pc.onicecandidate = (event) => {
      if (session !== this.session) return;
      const c = event.candidate;
      if (c && !c.candidate) return; // an empty candidate is the end marker of old specs
      const candidate = c
        ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex }
        : null;
      if (entry.signaled) this._sendCandidate(name, candidate);
      else entry.queue.push(candidate);
    };
    pc.onicegatheringstatechange = () => {
      if (session !== this.session) return;
      if (pc.iceGatheringState === "gathering") {
        clearTimeout(entry.timers.gather);
        entry.timers.gather = setTimeout(() => {
          if (pc.iceGatheringState === "complete" || session !== this.session) return;
          log.warn(`${name}: ICE gathering not complete after ${TIMEOUTS.gather} ms`);
          this.errors.add("ice_gathering_timeout", `${name}: ICE gathering did not complete`);
        }, TIMEOUTS.gather);
      } else if (pc.iceGatheringState === "complete") {
        clearTimeout(entry.timers.gather);
      }
    };
    pc.onconnectionstatechange = () => {
      if (session !== this.session) return;
      const state = pc.connectionState;
      log.info(`${name} connection ${state}`);
      clearTimeout(entry.timers.disconnected);
      if (state === "connected") {
        clearTimeout(entry.timers.connect);
        this._updateConnected();
      } else if (state === "failed") {
        this._mediaFailed(`${name} connection failed`);
      } else if (state === "disconnected") {
        entry.timers.disconnected = setTimeout(() => {
          if (session === this.session && pc.connectionState === "disconnected") {
            this._mediaFailed(`${name} connection disconnected for ${TIMEOUTS.disconnected} ms`);
          }
        }, TIMEOUTS.disconnected);
      }
      this._emit("pc");
    };
    return pc;
  }

  _sendCandidate(name, candidate) {
    this.connection?.send({ type: "candidate", pc: name, candidate });
  }

  /** The offer/answer of this pc went out: trickle what was gathered meanwhile. */
  _signaled(name, session) {
    const entry = this._pcs[name];
    if (!entry || session !== this.session) return;
    if (!entry.signaled) {
      entry.signaled = true;
      for (const candidate of entry.queue.splice(0)) this._sendCandidate(name, candidate);
    }
    if (entry.pc.connectionState !== "connected" && !entry.timers.connect) {
      entry.timers.connect = setTimeout(() => {
        if (session === this.session && entry.pc.connectionState !== "connected") {
          this._mediaFailed(`${name}: ICE did not connect within ${TIMEOUTS.connect / 1000} s`);
        }
      }, TIMEOUTS.connect);
    }
  }

  _closePc(name) {
    const entry = this._pcs[name];
    if (!entry) return;
    for (const timer of Object.values(entry.timers)) clearTimeout(timer);
    const pc = entry.pc;
    pc.onicecandidate = pc.onconnectionstatechange = pc.onicegatheringstatechange = null;
    pc.close();
    delete this._pcs[name];
  }

  _updateConnected() {
    const pcs = Object.values(this._pcs).map((e) => e.pc);
    if (pcs.length && pcs.every((pc) => pc.connectionState === "connected")) {
      this.mediaRestarts = 0;
      this._setState("connected");
    }
  }

  _mediaFailed(reason) {
    if (!this.connection) return;
    if (this.state === "reconnecting" && this.connection.resumeMedia === "restart") return; // on its way
    this.mediaRestarts += 1;
    log.error(reason);
    this.errors.add("media_failed", reason);
    if (this.mediaRestarts > MAX_MEDIA_RESTARTS) {
      this._teardownMedia();
      this._setState("failed");
      this._notice("error", `Media could not connect (${reason}). Leave and join again.`, "media_failed");
      return;
    }
    this._notice("error", `${reason}: reconnecting…`, "media_failed");
    this.connection.restart(reason, "restart");
  }

  // --- publishing ------------------------------------------------------------------

  async _startPublish(session) {
    const pc = this._newPc("publish", session);
    this.publishPc = pc;
    if (this.micTrack?.readyState === "live" && this.may("speak")) {
      this.micTransceiver = pc.addTransceiver(this.micTrack, {
        direction: "sendonly",
        streams: [this.micStream],
      });
    } else {
      // listen only: the server wants an audio m-line in every publish offer
      this.micTransceiver = pc.addTransceiver("audio", { direction: "inactive" });
    }
    if (this.screenTrack?.readyState === "live") this._attachScreen(pc);
    await this._negotiatePublish();
  }

  /** Offer on the publish connection; calls are serialized. */
  _negotiatePublish() {
    const session = this.session;
    const run = () => this._negotiateOnce(session);
    const result = this._publishChain.then(run, run);
    this._publishChain = result.catch(() => {});
    return result;
  }

  async _negotiateOnce(session) {
    const pc = this.publishPc;
    if (!pc || session !== this.session || pc.signalingState === "closed") return;
    const started = performance.now();
    await pc.setLocalDescription(await pc.createOffer());
    const sources = {};
    for (const [transceiver, source] of [
      [this.micTransceiver, "microphone"],
      [this.screenTransceiver, "screen"],
    ]) {
      if (transceiver?.mid != null && transceiver.direction === "sendonly" && transceiver.sender.track) {
        sources[transceiver.mid] = source;
      }
    }
    let reply;
    try {
      const request = this.connection.request(
        { type: "offer", pc: "publish", sdp: pc.localDescription.sdp, sources },
        TIMEOUTS.negotiate,
      );
      this._signaled("publish", session);
      reply = await request;
    } catch (err) {
      if (session === this.session && pc.signalingState === "have-local-offer") {
        await pc.setLocalDescription({ type: "rollback" });
      }
      throw err;
    }
    if (session !== this.session) return;
    await pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
    log.info(
      `publish negotiated in ${Math.round(performance.now() - started)} ms: ${JSON.stringify(sources)}`,
    );
    this._emit("pc");
  }

  // --- mute, deafen ----------------------------------------------------------------

  setMuted(muted) {
    this.muted = Boolean(muted);
    if (this.micTrack) this.micTrack.enabled = !this.muted;
    this.connection?.send({ type: "mute", source: "microphone", muted: this.muted });
    log.info(this.muted ? "muted" : "unmuted");
    this._emit("local");
  }

  /** Deafen: silence every incoming audio element (locally only). */
  setDeafened(deafened) {
    this.deafened = Boolean(deafened);
    for (const entry of this.remote.values()) {
      if (entry.kind === "audio") entry.element.muted = this.deafened;
    }
    log.info(this.deafened ? "deafened" : "undeafened");
    this._emit("local");
  }

  // --- screen share ----------------------------------------------------------------

  get sharing() {
    return Boolean(this.screenTrack);
  }

  /**
   * Share a screen (getDisplayMedia), or the given stream's video track. Resolves
   * true when sharing; false when cancelled or refused (a `notice` tells why).
   */
  async startScreenShare(stream = null) {
    if (this.screenTrack) return true;
    if (!this.publishPc || this.state === "reconnecting") {
      this._notice("error", "Screen share: join a call first.", "screen_failed");
      return false;
    }
    if (!this.may("screen")) {
      this._notice("error", "You may not share your screen in this channel.", "forbidden");
      return false;
    }
    try {
      stream =
        stream ??
        (await navigator.mediaDevices.getDisplayMedia({
          video: { frameRate: { ideal: 15, max: 30 } },
          audio: false,
        }));
    } catch (err) {
      if (err.name === "NotAllowedError") {
        screenLog.info("screen share cancelled");
      } else {
        screenLog.error(`getDisplayMedia: ${err.name}: ${err.message}`);
        this._notice("error", `Screen share failed: ${err.message}`, "screen_failed");
      }
      return false;
    }
    const track = stream.getVideoTracks()[0];
    if (!track) {
      this._notice("error", "Screen share: the shared stream has no video.", "screen_failed");
      return false;
    }
    if ("contentHint" in track && !track.contentHint) track.contentHint = "detail";
    this.screenStream = stream;
    this.screenTrack = track;
    track.addEventListener("ended", () => {
      if (track === this.screenTrack) {
        screenLog.info("screen capture ended by the browser");
        this.stopScreenShare().catch((err) => screenLog.error(err));
      }
    });
    this._attachScreen(this.publishPc);
    this._showLocalScreen(stream);
    this._emit("local");
    try {
      await this._negotiatePublish();
    } catch (err) {
      screenLog.error(`sharing refused: ${err.message}`);
      this._notice("error", `Screen share failed: ${err.message}`, err.code ?? "screen_failed");
      this._detachScreen();
      this._emit("local");
      return false;
    }
    screenLog.success(`sharing ${track.label || "a screen"}`);
    return true;
  }

  /** Stop sharing: the m-line goes inactive and stays for the next share. */
  async stopScreenShare() {
    if (!this.screenTrack) return;
    this._detachScreen();
    this._emit("local");
    if (this.publishPc) await this._negotiatePublish();
    screenLog.info("stopped sharing");
  }

  _attachScreen(pc) {
    const track = this.screenTrack;
    const transceiver = this.screenTransceiver;
    if (transceiver && pc.getTransceivers().includes(transceiver)) {
      transceiver.sender.replaceTrack(track);
      transceiver.direction = "sendonly";
      return;
    }
    this.screenTransceiver = pc.addTransceiver(track, {
      direction: "sendonly",
      streams: [this.screenStream],
    });
    this._preferVp8(this.screenTransceiver);
  }

  _detachScreen() {
    const track = this.screenTrack;
    this.screenTrack = this.screenStream = null;
    const transceiver = this.screenTransceiver;
    if (transceiver && this.publishPc?.signalingState !== "closed") {
      transceiver.direction = "inactive";
      transceiver.sender.replaceTrack(null).catch(() => {});
    }
    track?.stop();
    this._removeLocalScreen();
  }

  _removeLocalScreen() {
    const video = this.localScreenElement;
    if (!video) return;
    this.localScreenElement = null;
    video.srcObject = null;
    video.remove();
  }

  _preferVp8(transceiver) {
    if (!transceiver.setCodecPreferences) return;
    for (const caps of [RTCRtpReceiver.getCapabilities?.("video"), RTCRtpSender.getCapabilities?.("video")]) {
      if (!caps) continue;
      const vp8 = caps.codecs.filter((c) => c.mimeType.toLowerCase() === "video/vp8");
      const rest = caps.codecs.filter((c) => c.mimeType.toLowerCase() !== "video/vp8");
      try {
        transceiver.setCodecPreferences([...vp8, ...rest]);
        return;
      } catch (err) {
        screenLog.debug(`setCodecPreferences: ${err.message}`);
      }
    }
  }

  _showLocalScreen(stream) {
    const video = document.createElement("video");
    video.autoplay = true;
    video.muted = true;
    video.playsInline = true;
    video.srcObject = stream;
    video.dataset.local = "true";
    video.className = "screen-video";
    this.localScreenElement = video;
  }

  // --- signaling messages ----------------------------------------------------------

  _addParticipant(p) {
    this.participants.set(p.peer_id, {
      ...p,
      tracks: [...(p.tracks ?? [])],
      speaking: false,
      level: 0,
    });
  }

  _forget(peerId) {
    this.participants.delete(peerId);
    for (const [mid, entry] of this.remote) {
      if (entry.peer_id === peerId) this._removeRemote(mid);
    }
  }

  _onMessage(message) {
    const p = this.participants.get(message.peer_id);
    switch (message.type) {
      case "participant_joined":
        this._addParticipant(message.participant);
        log.info(`${message.participant.name} joined`);
        if (Object.values(this.tracksMap).some((t) => t.peer_id === message.participant.peer_id)) {
          this._mapRemote(); // an offer named this peer before we knew it
        }
        this._emit("participants");
        break;
      case "participant_left":
        if (p) log.info(`${p.name} left (${message.reason})`);
        this._forget(message.peer_id);
        this._emit("all");
        break;
      case "draining":
        this._notice(
          "warning",
          `The server is restarting: this call may go on for ${Math.round(message.deadline_s)} s.`,
          "draining",
        );
        break;
      case "track_published":
        if (p && !p.tracks.some((t) => t.source === message.source)) {
          p.tracks.push({ source: message.source, muted: false });
        }
        (message.source === "screen" ? screenLog : log).info(`${p?.name ?? message.peer_id} publishes ${message.source}`);
        this._emit("participants");
        break;
      case "track_unpublished":
        if (p) p.tracks = p.tracks.filter((t) => t.source !== message.source);
        this._emit("participants");
        break;
      case "track_muted":
        if (message.by === "server" && message.peer_id === this.peerId) {
          this.serverMuted = message.muted;
          this._notice(
            "warning",
            message.muted ? "A moderator muted your microphone." : "A moderator unmuted your microphone.",
            "server_mute",
          );
        }
        if (p) {
          const track = p.tracks.find((t) => t.source === message.source);
          if (track) track.muted = message.muted;
        }
        this._emit("participants");
        break;
      case "speaking": {
        const levels = new Map(message.speakers.map((s) => [s.peer_id, s.level]));
        for (const [peerId, participant] of this.participants) {
          participant.speaking = levels.has(peerId);
          participant.level = levels.get(peerId) ?? 0;
        }
        this._emit("speaking");
        break;
      }
      case "offer":
        if (message.pc === "subscribe") this._onSubscribeOffer(message);
        break;
      case "error":
        if (message.ref == null) this._notice("warning", `Server: ${message.message}`, message.code);
        break;
      default:
        break;
    }
  }

  // --- subscribing -----------------------------------------------------------------

  _onSubscribeOffer(message) {
    const session = this.session;
    const run = () => this._answerSubscribe(message, session);
    this._subscribeChain = this._subscribeChain.then(run, run).catch((err) => {
      if (session !== this.session) return;
      log.error(`subscribe offer failed: ${err.message}`);
      this.errors.add("subscribe_failed", err.message);
    });
  }

  async _answerSubscribe(message, session) {
    if (session !== this.session) return;
    let pc = this.subscribePc;
    if (!pc) {
      pc = this.subscribePc = this._newPc("subscribe", session);
      pc.ontrack = () => {}; // mapping is done from the offer's tracks, below
    }
    await pc.setRemoteDescription({ type: "offer", sdp: message.sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    if (session !== this.session) return;
    this.connection.send({ type: "answer", pc: "subscribe", sdp: pc.localDescription.sdp });
    this._signaled("subscribe", session);
    this.tracksMap = message.tracks ?? {};
    this._mapRemote();
  }

  _mapRemote() {
    const pc = this.subscribePc;
    if (!pc) return;
    for (const transceiver of pc.getTransceivers()) {
      const mid = transceiver.mid;
      if (mid == null) continue;
      const info = this.tracksMap[mid];
      const current = this.remote.get(mid);
      const wanted = info && this.participants.has(info.peer_id) ? info : null;
      if (current && (!wanted || current.peer_id !== wanted.peer_id || current.source !== wanted.source)) {
        this._removeRemote(mid);
      }
      if (wanted && !this.remote.has(mid)) this._addRemote(mid, transceiver.receiver.track, wanted);
    }
    for (const mid of [...this.remote.keys()]) {
      if (!(mid in this.tracksMap)) this._removeRemote(mid);
    }
    this._emit("remote");
  }

  _addRemote(mid, track, { peer_id, source }) {
    const stream = new MediaStream([track]);
    let element;
    if (track.kind === "audio") {
      element = document.createElement("audio");
      element.autoplay = true;
      element.muted = this.deafened;
      element.srcObject = stream;
      this._container().appendChild(element);
      element.play().catch((err) => this._playbackBlocked(err));
    } else {
      element = document.createElement("video");
      element.autoplay = true;
      element.muted = true;
      element.playsInline = true;
      element.srcObject = stream;
      element.className = "screen-video";
    }
    element.dataset.peerId = peer_id;
    element.dataset.source = source;
    element.dataset.mid = mid;
    this.remote.set(mid, { mid, peer_id, source, kind: track.kind, track, element });
    const name = this.participants.get(peer_id)?.name ?? peer_id;
    (source === "screen" ? screenLog : log).info(`receiving ${name}'s ${source} on mid ${mid}`);
  }

  _removeRemote(mid) {
    const entry = this.remote.get(mid);
    if (!entry) return;
    this.remote.delete(mid);
    entry.element.pause?.();
    entry.element.srcObject = null;
    entry.element.remove();
  }

  _playbackBlocked(err) {
    if (err.name !== "NotAllowedError") {
      log.warn(`audio playback: ${err.name}: ${err.message}`);
      return;
    }
    if (this._audioUnlock) return;
    log.warn("the browser blocked audio playback until you interact with the page");
    this._notice("warning", "Click anywhere to turn on sound.", "playback_blocked");
    this._audioUnlock = () => {
      document.removeEventListener("click", this._audioUnlock);
      this._audioUnlock = null;
      for (const entry of this.remote.values()) {
        if (entry.kind === "audio") entry.element.play().catch(() => {});
      }
    };
    document.addEventListener("click", this._audioUnlock);
  }

  /** The remote entry carrying `source` of `peerId`, if any. */
  remoteOf(peerId, source = "microphone") {
    for (const entry of this.remote.values()) {
      if (entry.peer_id === peerId && entry.source === source) return entry;
    }
    return null;
  }

  // --- stats -----------------------------------------------------------------------

  _startStats() {
    this._stopStats();
    const session = this.session;
    this._statsTimer = setInterval(async () => {
      if (session !== this.session || !this.connection) return;
      // closed under us (a crashed media process, an extension): no event says so
      const closed = Object.entries(this._pcs).find(([, e]) => e.pc.signalingState === "closed");
      if (closed) {
        this._mediaFailed(`${closed[0]} connection closed`);
        return;
      }
      try {
        const report = await this.collectStats();
        if (session !== this.session) return;
        if (this.connection?.send({ type: "stats", report: this._fit(report) })) this.statsSent += 1;
      } catch (err) {
        statsLog.warn(`stats: ${err.message}`);
      }
    }, STATS_INTERVAL);
  }

  _stopStats() {
    clearInterval(this._statsTimer);
    this._statsTimer = null;
  }

  _fit(report) {
    while (report.inbound.length && JSON.stringify(report).length > STATS_BYTES) report.inbound.pop();
    return report;
  }

  /** The `stats` report of docs/protocol.md, from both connections' getStats(). */
  async collectStats() {
    const report = { timestamp: Date.now() / 1000, outbound: [], inbound: [], candidatePair: {} };
    const publish = this.publishPc;
    if (publish && publish.signalingState !== "closed") {
      const stats = await publish.getStats();
      const mid = this.micTransceiver?.mid;
      const track = this.micTrack;
      const out = {
        source: "microphone",
        trackMuted: track ? track.muted : null,
        trackEnabled: track ? track.enabled : null,
        trackReadyState: track ? track.readyState : "none",
      };
      stats.forEach((s) => {
        if (s.type !== "outbound-rtp" || s.kind !== "audio") return;
        if (s.mid != null && mid != null && s.mid !== mid) return;
        out.packetsSent = s.packetsSent;
        out.bytesSent = s.bytesSent;
        const source = s.mediaSourceId ? stats.get(s.mediaSourceId) : null;
        if (source) {
          out.audioLevel = round(source.audioLevel);
          out.totalAudioEnergy = round(source.totalAudioEnergy);
          out.totalSamplesDuration = round(source.totalSamplesDuration);
        }
      });
      if (out.totalAudioEnergy === undefined) {
        stats.forEach((s) => {
          if (s.type === "media-source" && s.kind === "audio") {
            out.audioLevel = round(s.audioLevel);
            out.totalAudioEnergy = round(s.totalAudioEnergy);
            out.totalSamplesDuration = round(s.totalSamplesDuration);
          }
        });
      }
      report.outbound.push(out);
      const path = pathOf(stats);
      if (path) report.candidatePair.publish = path;
    }
    const subscribe = this.subscribePc;
    if (subscribe && subscribe.signalingState !== "closed") {
      const stats = await subscribe.getStats();
      const byTrack = new Map();
      for (const t of subscribe.getTransceivers()) {
        if (t.mid != null && t.receiver.track) byTrack.set(t.receiver.track.id, t.mid);
      }
      stats.forEach((s) => {
        if (s.type !== "inbound-rtp" || s.kind !== "audio") return;
        const mid = s.mid ?? byTrack.get(s.trackIdentifier);
        const info = mid != null ? this.tracksMap[mid] : null;
        if (!info) return;
        report.inbound.push({
          peer_id: info.peer_id,
          source: info.source,
          packetsReceived: s.packetsReceived,
          packetsLost: s.packetsLost,
          jitter: s.jitter,
          jitterBufferDelay: round(s.jitterBufferDelay),
          jitterBufferEmittedCount: s.jitterBufferEmittedCount,
          concealedSamples: s.concealedSamples,
          totalSamplesReceived: s.totalSamplesReceived,
          totalAudioEnergy: round(s.totalAudioEnergy),
          audioLevel: round(s.audioLevel),
        });
      });
      const path = pathOf(stats);
      if (path) report.candidatePair.subscribe = path;
    }
    this.lastStats = report;
    return report;
  }

  /** Inbound video (screen) counters per remote sharer, for the UI and tests. */
  async screenStats() {
    const result = {};
    const pc = this.subscribePc;
    if (!pc) return result;
    const stats = await pc.getStats();
    stats.forEach((s) => {
      if (s.type !== "inbound-rtp" || s.kind !== "video") return;
      const info = this.tracksMap[s.mid];
      if (info) {
        result[info.peer_id] = {
          framesDecoded: s.framesDecoded,
          frameWidth: s.frameWidth,
          frameHeight: s.frameHeight,
          packetsReceived: s.packetsReceived,
          decoderImplementation: s.decoderImplementation,
        };
      }
    });
    return result;
  }

  // --- debug -----------------------------------------------------------------------

  getDebugInfo() {
    return {
      state: this.state,
      channel: this.channel,
      peerId: this.peerId,
      self: this.self,
      closeReason: this.closeReason,
      muted: this.muted,
      deafened: this.deafened,
      sharing: this.sharing,
      processing: this.processing,
      micDeviceId: this.micDeviceId,
      micError: this.micError,
      mediaRestarts: this.mediaRestarts,
      resumes: this.connection?.resumes ?? 0,
      publish: pcInfo(this.publishPc),
      subscribe: pcInfo(this.subscribePc),
      localTracks: [trackInfo(this.micTrack, "microphone"), trackInfo(this.screenTrack, "screen")].filter(Boolean),
      remote: [...this.remote.values()].map((e) => ({
        mid: e.mid,
        peer_id: e.peer_id,
        source: e.source,
        kind: e.kind,
        track: trackInfo(e.track, e.source),
        paused: e.element.paused,
        muted: e.element.muted,
      })),
      tracksMap: this.tracksMap,
      participants: [...this.participants.values()].map((p) => ({
        peer_id: p.peer_id,
        name: p.name,
        self: Boolean(p.self),
        tracks: p.tracks,
        speaking: p.speaking,
      })),
      elements: document.querySelectorAll("audio, video").length,
      statsSent: this.statsSent,
      // the selected candidate pair of each connection, as of the last stats
      candidatePairs: this.lastStats?.candidatePair ?? null,
      lastStats: this.lastStats,
      errors: this.errors.toJSON(),
    };
  }
}

export const voiceService = new VoiceService();
