// The console debug API: window.miscord.
//
//   miscord.getDebugInfo()              both services' state, connections, tracks, errors,
//                                        each connection's selected candidate pair
//   await miscord.diagnoseAudioIssues() findings about this call's audio, printed too
//   miscord.enableAudioDataLogging(true) levels and getStats once a second, here and
//                                        on the server (when it allows it)

import { history, logger } from "./log.js";
import { voiceService } from "./voiceService.js";
import { websocketService } from "./websocketService.js";

const log = logger("debug");
const statsLog = logger("stats");

const SEVERITY_ORDER = { critical: 0, warning: 1, info: 2 };
const SEVERITY_EMOJI = { critical: "❌", warning: "⚠️", info: "🔧" };

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function api(method, path, body = undefined) {
  const token = voiceService.token;
  if (!token) return { status: 0, data: null };
  const response = await fetch(path, {
    method,
    headers: {
      Authorization: `Bearer ${token}`,
      Accept: "application/json",
      ...(body ? { "Content-Type": "application/json" } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  let data = null;
  try {
    data = await response.json();
  } catch {
    /* not JSON */
  }
  return { status: response.status, data };
}

export function getDebugInfo() {
  return {
    websocket: websocketService.getDebugInfo(),
    voice: voiceService.getDebugInfo(),
    log: history.slice(-30),
  };
}

function increased(before, after, field) {
  return typeof after?.[field] === "number" && after[field] > (before?.[field] ?? 0);
}

/**
 * Check this call's audio end to end: permission, device, the local track, mute,
 * packets and energy leaving, per remote participant packets and energy arriving,
 * and the server's own report. Returns `{findings, checks, ...}`; a healthy call
 * has no findings.
 */
export async function diagnoseAudioIssues({ sampleMs = 1000, print = true } = {}) {
  const v = voiceService;
  const findings = [];
  const checks = {};
  const add = (code, severity, message, extra = {}) =>
    findings.push({ code, severity, message, ...extra });

  try {
    const permission = await navigator.permissions.query({ name: "microphone" });
    checks.permission = permission.state;
    if (permission.state === "denied") {
      add("mic_permission_denied", "critical", "The browser denies this page the microphone.", {
        advice: "Allow the microphone in the site settings (the icon left of the address).",
      });
    }
  } catch {
    checks.permission = "unknown";
  }

  const mics = await v.listMicrophones().catch(() => []);
  checks.microphones = mics.map((d) => d.label || d.deviceId);
  if (!mics.length) add("no_microphone", "critical", "No microphone is connected.");

  checks.state = v.state;
  checks.signaling = v.connection?.state ?? "none";
  let before = null;
  let after = null;
  let serverReport = null;
  if (!v.inCall) {
    add("not_in_call", "info", "You are not in a voice channel.");
  } else {
    if (checks.signaling !== "joined") {
      add("signaling_disconnected", "critical", `The signaling connection is ${checks.signaling}.`);
    }
    const track = v.micTrack;
    checks.localTrack = track
      ? { readyState: track.readyState, enabled: track.enabled, muted: track.muted, label: track.label }
      : null;
    if (!track) {
      add("no_local_track", "critical", "No microphone track: nobody hears you.", {
        error: v.micError,
      });
    } else {
      if (track.readyState !== "live") {
        add("mic_track_ended", "critical", `Your microphone track ended ("${track.label}").`, {
          advice: "Pick another microphone.",
        });
      }
      if (track.muted) {
        add("mic_muted_by_system", "warning", "The system or browser delivers no audio from your microphone.", {
          advice: "Check the OS privacy settings and whether another app holds the microphone.",
        });
      }
    }
    if (v.muted) add("muted", "info", "You are muted: nobody hears you.", { advice: "Unmute." });
    if (v.deafened) add("deafened", "info", "You are deafened: you hear nobody.");
    for (const [name, pc] of [
      ["publish", v.publishPc],
      ["subscribe", v.subscribePc],
    ]) {
      checks[`${name}Connection`] = pc?.connectionState ?? "none";
      if (pc && pc.connectionState !== "connected") {
        add(`${name}_not_connected`, "critical", `The ${name} connection is ${pc.connectionState}.`);
      }
    }
    if (!v.publishPc) add("publish_not_connected", "critical", "There is no publish connection.");

    before = await v.collectStats();
    await sleep(sampleMs);
    after = await v.collectStats();

    const outBefore = before.outbound[0];
    const outAfter = after.outbound[0];
    checks.outbound = outAfter ?? null;
    // how media travels: local.candidateType "relay" is through TURN
    checks.candidatePairs = after.candidatePair;
    if (track && v.micTransceiver?.direction === "sendonly") {
      if (!increased(outBefore, outAfter, "packetsSent")) {
        add("no_outbound_packets", "critical", "No audio packets leave your browser.", {
          packetsSent: outAfter?.packetsSent ?? 0,
        });
      }
      if (!v.muted && track.enabled && !increased(outBefore, outAfter, "totalAudioEnergy")) {
        add("silent_microphone", "warning", "Your microphone delivers only silence.", {
          totalAudioEnergy: outAfter?.totalAudioEnergy,
          advice: "Check the microphone choice and its hardware mute switch.",
        });
      }
    }

    checks.inbound = {};
    for (const p of v.participants.values()) {
      if (p.self) continue;
      const mic = p.tracks.find((t) => t.source === "microphone");
      if (!mic) continue;
      const inBefore = before.inbound.find((i) => i.peer_id === p.peer_id && i.source === "microphone");
      const inAfter = after.inbound.find((i) => i.peer_id === p.peer_id && i.source === "microphone");
      checks.inbound[p.peer_id] = inAfter ?? null;
      const who = { remote_peer: p.peer_id, name: p.name };
      const entry = v.remoteOf(p.peer_id, "microphone");
      if (!entry || !inAfter) {
        add("no_inbound_track", "critical", `You do not receive ${p.name}'s microphone.`, who);
        continue;
      }
      if (entry.element.paused) {
        add("playback_blocked", "warning", `${p.name}'s audio is not playing (autoplay blocked?).`, {
          ...who,
          advice: "Click the page to allow sound.",
        });
      }
      if (mic.muted) continue;
      if (!increased(inBefore, inAfter, "packetsReceived")) {
        add("no_inbound_packets", "critical", `No audio packets arrive from ${p.name}.`, {
          ...who,
          packetsReceived: inAfter.packetsReceived,
        });
      } else if (!increased(inBefore, inAfter, "totalAudioEnergy")) {
        add("silent_remote", "info", `${p.name} is silent (not speaking, or their microphone delivers silence).`, who);
      }
    }

    const report = await api("GET", `/api/peers/${encodeURIComponent(v.peerId)}/report`).catch((err) => ({
      status: 0,
      data: null,
      error: err.message,
    }));
    checks.serverReport = report.status;
    if (report.status === 200 && report.data) {
      checks.serverVerdict = report.data.verdict;
      for (const f of report.data.findings ?? []) {
        if (f.severity === "info" || findings.some((x) => x.code === f.code)) continue;
        add(f.code, f.severity, f.summary ?? f.message ?? f.code, { ...f, origin: "server" });
      }
    }
    if (report.status === 200) serverReport = report.data;
  }

  findings.sort((a, b) => (SEVERITY_ORDER[a.severity] ?? 3) - (SEVERITY_ORDER[b.severity] ?? 3));
  const result = {
    generated_at: Date.now() / 1000,
    peer_id: v.peerId,
    findings,
    checks,
    stats: { before, after },
    server: serverReport,
  };
  if (print) {
    if (!findings.length) log.success("diagnoseAudioIssues: no problems found");
    else log.warn(`diagnoseAudioIssues: ${findings.length} finding(s)`);
    for (const f of findings) {
      console.log(`${SEVERITY_EMOJI[f.severity] ?? "🔧"} [${f.severity}] ${f.code}: ${f.message}`);
    }
  }
  return result;
}

let loggingTimer = null;
let previous = null;

function delta(now, before, field) {
  if (typeof now?.[field] !== "number") return "?";
  const d = now[field] - (before?.[field] ?? 0);
  return `${now[field]} (+${Number(d.toPrecision(4))})`;
}

async function logAudioData() {
  const v = voiceService;
  if (!v.inCall) return;
  const report = await v.collectStats();
  const out = report.outbound[0];
  const outBefore = previous?.outbound[0];
  if (out) {
    statsLog.info(
      `→ mic level=${out.audioLevel ?? "?"} energy=${delta(out, outBefore, "totalAudioEnergy")} ` +
        `packetsSent=${delta(out, outBefore, "packetsSent")} enabled=${out.trackEnabled} ` +
        `state=${out.trackReadyState} rtt=${report.candidatePair.publish?.currentRoundTripTime ?? "?"}`,
    );
  }
  for (const item of report.inbound) {
    const before = previous?.inbound.find((i) => i.peer_id === item.peer_id);
    const name = v.participants.get(item.peer_id)?.name ?? item.peer_id;
    statsLog.info(
      `← ${name} level=${item.audioLevel ?? "?"} energy=${delta(item, before, "totalAudioEnergy")} ` +
        `packets=${delta(item, before, "packetsReceived")} lost=${item.packetsLost} ` +
        `concealed=${delta(item, before, "concealedSamples")} jitter=${item.jitter}`,
    );
  }
  previous = report;
}

/**
 * Log client-side audio levels and getStats once a second, and ask the server to
 * log this peer's audio data in detail (a support right may be needed there).
 */
export async function enableAudioDataLogging(enabled = true, intervalMs = 1000) {
  clearInterval(loggingTimer);
  loggingTimer = null;
  previous = null;
  if (enabled) {
    loggingTimer = setInterval(() => {
      logAudioData().catch((err) => statsLog.warn(`audio data logging: ${err.message}`));
    }, intervalMs);
  }
  statsLog.info(`audio data logging ${enabled ? "on" : "off"}`);
  let server = null;
  const peerId = voiceService.peerId;
  if (peerId) {
    try {
      const reply = await api("POST", `/api/peers/${encodeURIComponent(peerId)}/audio-logging`, {
        enabled: Boolean(enabled),
      });
      server = reply.status;
      if (reply.status >= 200 && reply.status < 300) statsLog.success("the server logs this peer's audio data too");
      else statsLog.debug(`server audio logging not available (${reply.status})`);
    } catch (err) {
      statsLog.debug(`server audio logging not available (${err.message})`);
    }
  }
  return { enabled: Boolean(enabled), server };
}

export function installDebugApi() {
  window.miscord = {
    getDebugInfo,
    diagnoseAudioIssues,
    enableAudioDataLogging,
    voiceService,
    websocketService,
  };
  log.info("debug API ready: miscord.getDebugInfo(), await miscord.diagnoseAudioIssues(), miscord.enableAudioDataLogging(true)");
}
