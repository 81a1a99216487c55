// The page: sign in, pick a channel, and the call view (participants, screen
// tiles, controls). All media and signaling live in voiceService/websocketService.

import { diagnoseAudioIssues, installDebugApi } from "./debug.js";
import { logger } from "./log.js";
import { voiceService } from "./voiceService.js";

const log = logger("debug");
const $ = (id) => document.getElementById(id);

const CHANNEL_ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/;
const STORE = {
  name: "miscord.name",
  channels: "miscord.channels",
  processing: "miscord.processing",
  mic: "miscord.microphone",
  token: "miscord.token", // sessionStorage: this tab only
};

const ICONS = {
  mic: "M12 14c1.66 0 3-1.34 3-3V5c0-1.66-1.34-3-3-3S9 3.34 9 5v6c0 1.66 1.34 3 3 3zm5.3-3c0 3-2.54 5.1-5.3 5.1S6.7 14 6.7 11H5c0 3.41 2.72 6.23 6 6.72V21h2v-3.28c3.28-.48 6-3.3 6-6.72h-1.7z",
  micOff:
    "M19 11h-1.7c0 .74-.16 1.43-.43 2.05l1.23 1.23c.56-.98.9-2.09.9-3.28zm-4.02.17c0-.06.02-.11.02-.17V5c0-1.66-1.34-3-3-3S9 3.34 9 5v.18l5.98 5.99zM4.27 3L3 4.27l6.01 6.01V11c0 1.66 1.33 3 2.99 3 .22 0 .44-.03.65-.08l1.66 1.66c-.71.33-1.5.52-2.31.52-2.76 0-5.3-2.1-5.3-5.1H5c0 3.41 2.72 6.23 6 6.72V21h2v-3.28c.91-.13 1.77-.45 2.54-.9L19.73 21 21 19.73 4.27 3z",
  headset:
    "M12 1c-4.97 0-9 4.03-9 9v7c0 1.66 1.34 3 3 3h3v-8H5v-2c0-3.87 3.13-7 7-7s7 3.13 7 7v2h-4v8h3c1.66 0 3-1.34 3-3v-7c0-4.97-4.03-9-9-9z",
  headsetOff:
    "M12 4c3.87 0 7 3.13 7 7v2h-2.92L21 17.92V11c0-4.97-4.03-9-9-9-1.95 0-3.76.62-5.23 1.68l1.44 1.44C9.3 4.41 10.6 4 12 4zM2.27 1.72L1 3l3.33 3.32C3.49 7.68 3 9.29 3 11v7c0 1.66 1.34 3 3 3h3v-8H5v-2c0-1.17.29-2.26.79-3.22L15 17v4h3c.3 0 .59-.06.86-.14L21 23l1.27-1.27-20-20.01z",
  screen:
    "M20 18c1.1 0 1.99-.9 1.99-2L22 6c0-1.11-.9-2-2-2H4c-1.11 0-2 .89-2 2v10c0 1.1.89 2 2 2H0v2h24v-2h-4zm-7-3.53v-2.19c-2.78 0-4.61.85-6 2.72.56-2.67 2.11-5.33 6-5.87V7l4 3.73-4 3.74z",
  leave:
    "M12 9c-1.6 0-3.15.25-4.6.72v3.1c0 .39-.23.74-.56.9-.98.49-1.87 1.12-2.66 1.85-.18.18-.43.28-.7.28-.28 0-.53-.11-.71-.29L.29 13.08c-.18-.17-.29-.42-.29-.7 0-.28.11-.53.29-.71C3.34 8.78 7.46 7 12 7s8.66 1.78 11.71 4.67c.18.18.29.43.29.71 0 .28-.11.53-.29.71l-2.48 2.48c-.18.18-.43.29-.71.29-.27 0-.52-.11-.7-.28-.79-.74-1.69-1.36-2.67-1.85-.33-.16-.56-.5-.56-.9v-3.1C15.15 9.25 13.6 9 12 9z",
};

function icon(name, label = "") {
  return (
    `<svg class="icon" viewBox="0 0 24 24" aria-hidden="true"><path d="${ICONS[name]}"/></svg>` +
    (label ? `<span class="label">${label}</span>` : "")
  );
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "html") node.innerHTML = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

const state = { devLogin: false, useToken: false, joining: false };

// --- alerts -------------------------------------------------------------------------

function showAlert(text, level = "error", code = "") {
  const box = $("alert");
  $("alert-text").textContent = text;
  box.dataset.level = level;
  box.dataset.code = code;
  box.hidden = false;
}

function hideAlert() {
  $("alert").hidden = true;
}

// --- sign in ------------------------------------------------------------------------

function recentChannels() {
  try {
    return JSON.parse(localStorage.getItem(STORE.channels) ?? "[]");
  } catch {
    return [];
  }
}

function rememberChannel(channel) {
  const channels = [channel, ...recentChannels().filter((c) => c !== channel)].slice(0, 10);
  localStorage.setItem(STORE.channels, JSON.stringify(channels));
}

function renderSignin() {
  $("name-row").hidden = !state.devLogin || state.useToken;
  $("token-row").hidden = state.devLogin && !state.useToken;
  const list = $("channel-list");
  list.replaceChildren(...[...new Set([...recentChannels(), "general"])].map((c) => el("option", { value: c })));
}

async function loadConfig() {
  try {
    const response = await fetch("/api/config");
    const config = await response.json();
    state.devLogin = Boolean(config.dev_login);
  } catch (err) {
    log.warn(`could not read /api/config: ${err.message}`);
  }
}

async function devLogin(user) {
  const response = await fetch("/api/dev-login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error ?? `development login failed (${response.status})`);
  return body.token;
}

async function onJoin(event) {
  event.preventDefault();
  if (state.joining) return;
  const channel = $("channel-input").value.trim();
  $("signin-error").textContent = "";
  hideAlert();
  if (!CHANNEL_ID.test(channel)) {
    $("signin-error").textContent = "A channel is 1–64 of A–Z a–z 0–9 _ . : - (starting with a letter or digit).";
    return;
  }
  state.joining = true;
  $("join-button").disabled = true;
  try {
    let token;
    if (state.devLogin && !state.useToken) {
      const name = $("name-input").value.trim();
      if (!name) throw new Error("Enter your name.");
      localStorage.setItem(STORE.name, name);
      token = await devLogin(name);
    } else {
      token = $("token-input").value.trim();
      if (!token) throw new Error("Paste your access token.");
      sessionStorage.setItem(STORE.token, token);
    }
    rememberChannel(channel);
    voiceService.processing = $("processing-toggle").checked;
    voiceService.micDeviceId = $("mic-select-signin").value;
    showCall(channel);
    await voiceService.join({ token, channel });
    refreshMicrophones();
  } catch (err) {
    if (voiceService.state === "left") return; // left while joining
    log.error(`join: ${err.message}`);
    if (voiceService.state !== "closed") showSignin();
    $("signin-error").textContent = err.message;
  } finally {
    state.joining = false;
    $("join-button").disabled = false;
  }
}

// --- screens ------------------------------------------------------------------------

function showSignin() {
  $("call").hidden = true;
  $("signin").hidden = false;
  renderSignin();
  refreshMicrophones();
}

function showCall(channel) {
  $("signin").hidden = true;
  $("call").hidden = false;
  $("channel-name").textContent = channel;
  document.title = `#${channel} — miscord voice`;
  $("diagnosis").hidden = true;
  render();
}

// --- the call view ------------------------------------------------------------------

const STATUS_TEXT = {
  idle: "",
  joining: "Joining…",
  connecting: "Connecting…",
  connected: "Voice connected",
  reconnecting: "Reconnecting…",
  failed: "Media failed",
  closed: "Disconnected",
  left: "Left",
};

function micMuted(p) {
  if (p.self) return voiceService.muted || !voiceService.micTrack;
  const mic = p.tracks.find((t) => t.source === "microphone");
  return !mic || mic.muted;
}

function sortedParticipants() {
  return [...voiceService.participants.values()].sort(
    (a, b) => (b.self ? 1 : 0) - (a.self ? 1 : 0) || a.name.localeCompare(b.name),
  );
}

// avatar colours: none of them green, the colour of speaking
const AVATAR_COLORS = ["#5865f2", "#eb459e", "#ed4245", "#e67e22", "#3ba5ec", "#9b59b6", "#747f8d", "#c27c0e"];

function avatar(p) {
  const hash = [...p.user_id].reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 7);
  return el("span", {
    class: "avatar",
    style: `--avatar:${AVATAR_COLORS[hash % AVATAR_COLORS.length]}`,
    textContent: (p.name[0] ?? "?").toUpperCase(),
  });
}

function participantAttrs(p) {
  return {
    "data-peer-id": p.peer_id,
    "data-muted": String(micMuted(p)),
    "data-speaking": String(Boolean(p.speaking) && !micMuted(p)),
    "data-sharing": String(p.self ? voiceService.sharing : p.tracks.some((t) => t.source === "screen")),
  };
}

function renderParticipants() {
  const people = sortedParticipants();
  $("participant-count").textContent = String(people.length);
  $("participant-list").replaceChildren(
    ...people.map((p) => {
      const attrs = participantAttrs(p);
      return el(
        "li",
        { class: "participant", ...attrs },
        avatar(p),
        el("span", { class: "name", textContent: p.self ? `${p.name} (you)` : p.name }),
        el("span", {
          class: "badges",
          html:
            (attrs["data-sharing"] === "true" ? `<span class="badge live" title="Sharing their screen">LIVE</span>` : "") +
            (attrs["data-muted"] === "true" ? `<span class="badge muted" title="Muted">${icon("micOff")}</span>` : ""),
        }),
      );
    }),
  );
  $("cards").replaceChildren(
    ...people.map((p) => {
      const attrs = participantAttrs(p);
      return el(
        "div",
        { class: "card-tile", ...attrs },
        avatar(p),
        el("span", {
          class: "card-name",
          html: (attrs["data-muted"] === "true" ? icon("micOff") : "") + escapeHtml(p.name),
        }),
      );
    }),
  );
}

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function screenTile(key, element, label, peerId, local) {
  let tile = $("screens").querySelector(`.screen-tile[data-key="${CSS.escape(key)}"]`);
  if (!tile) {
    tile = el(
      "div",
      { class: "screen-tile", "data-key": key, "data-peer-id": peerId, "data-local": String(local) },
      el("div", { class: "screen-label", html: `${icon("screen")}<span></span>` }),
    );
    tile.addEventListener("dblclick", () => {
      if (document.fullscreenElement) document.exitFullscreen();
      else tile.requestFullscreen?.().catch(() => {});
    });
    tile.title = "Double-click for full screen";
  }
  if (element.parentElement !== tile) tile.prepend(element);
  tile.querySelector(".screen-label span").textContent = label;
  return tile;
}

function renderScreens() {
  const tiles = [];
  const local = voiceService.localScreenElement;
  if (local) tiles.push(screenTile("local", local, "Your screen", voiceService.peerId ?? "", true));
  for (const entry of voiceService.remote.values()) {
    if (entry.source !== "screen") continue;
    const name = voiceService.participants.get(entry.peer_id)?.name ?? entry.peer_id;
    tiles.push(screenTile(`mid:${entry.mid}`, entry.element, `${name}'s screen`, entry.peer_id, false));
  }
  $("screens").replaceChildren(...tiles);
  $("stage").dataset.screens = String(tiles.length);
}

function renderControls() {
  const v = voiceService;
  const inCall = v.inCall;
  const mute = $("mute-button");
  mute.innerHTML = icon(v.muted ? "micOff" : "mic", v.muted ? "Unmute" : "Mute");
  mute.setAttribute("aria-pressed", String(v.muted));
  const deafen = $("deafen-button");
  deafen.innerHTML = icon(v.deafened ? "headsetOff" : "headset", v.deafened ? "Undeafen" : "Deafen");
  deafen.setAttribute("aria-pressed", String(v.deafened));
  const share = $("share-button");
  share.innerHTML = icon("screen", v.sharing ? "Stop sharing" : "Share screen");
  share.setAttribute("aria-pressed", String(v.sharing));
  share.disabled = !v.publishPc || !navigator.mediaDevices?.getDisplayMedia;
  $("leave-button").innerHTML = icon("leave", "Leave");
  for (const id of ["mute-button", "deafen-button", "leave-button", "mic-select"]) $(id).disabled = !inCall;
}

function renderStatus() {
  const status = $("call-status");
  status.dataset.state = voiceService.state;
  status.textContent = STATUS_TEXT[voiceService.state] ?? voiceService.state;
}

function render() {
  renderStatus();
  renderParticipants();
  renderScreens();
  renderControls();
}

async function refreshMicrophones() {
  let mics = [];
  try {
    mics = await voiceService.listMicrophones();
  } catch (err) {
    log.warn(`enumerateDevices: ${err.message}`);
  }
  const current = voiceService.micTrack?.getSettings?.().deviceId ?? voiceService.micDeviceId;
  for (const select of document.querySelectorAll(".mic-select")) {
    select.replaceChildren(
      el("option", { value: "", textContent: "Default microphone" }),
      ...mics
        .filter((d) => d.deviceId && d.deviceId !== "default")
        .map((d, i) => el("option", { value: d.deviceId, textContent: d.label || `Microphone ${i + 1}` })),
    );
    select.value = [...select.options].some((o) => o.value === current) ? current : "";
  }
}

async function showDiagnosis() {
  const box = $("diagnosis");
  box.hidden = false;
  box.textContent = "Checking your audio…";
  const result = await diagnoseAudioIssues();
  if (!result.findings.length) {
    box.replaceChildren(el("p", { class: "ok", textContent: "✅ Your audio looks fine." }));
    return;
  }
  box.replaceChildren(
    ...result.findings.map((f) =>
      el("p", { class: `finding ${f.severity}`, textContent: `${f.message}${f.advice ? ` ${f.advice}` : ""}` }),
    ),
  );
}

// --- wiring -------------------------------------------------------------------------

function wire() {
  $("signin-form").addEventListener("submit", onJoin);
  $("use-token").addEventListener("click", () => {
    state.useToken = true;
    renderSignin();
  });
  $("alert-close").addEventListener("click", hideAlert);
  $("processing-toggle").addEventListener("change", (e) => {
    localStorage.setItem(STORE.processing, String(e.target.checked));
  });
  $("mic-select-signin").addEventListener("change", (e) => localStorage.setItem(STORE.mic, e.target.value));
  $("mic-select").addEventListener("change", async (e) => {
    localStorage.setItem(STORE.mic, e.target.value);
    try {
      await voiceService.setMicrophone(e.target.value);
    } catch (err) {
      showAlert(`Could not switch the microphone: ${err.message}`);
    }
    refreshMicrophones();
  });
  $("mute-button").addEventListener("click", () => voiceService.setMuted(!voiceService.muted));
  $("deafen-button").addEventListener("click", () => voiceService.setDeafened(!voiceService.deafened));
  $("share-button").addEventListener("click", async () => {
    if (!voiceService.sharing) {
      await voiceService.startScreenShare(); // failures arrive as notices
      return;
    }
    try {
      await voiceService.stopScreenShare();
    } catch (err) {
      showAlert(`Stopping the screen share failed: ${err.message}`);
    }
  });
  $("leave-button").addEventListener("click", async () => {
    await voiceService.leave();
    showSignin();
  });
  $("diagnose-button").addEventListener("click", showDiagnosis);
  document.addEventListener("keydown", (e) => {
    if (!e.ctrlKey || !e.shiftKey || !voiceService.inCall) return;
    if (e.key.toLowerCase() === "m") voiceService.setMuted(!voiceService.muted);
    else if (e.key.toLowerCase() === "d") voiceService.setDeafened(!voiceService.deafened);
    else return;
    e.preventDefault();
  });
  navigator.mediaDevices?.addEventListener?.("devicechange", refreshMicrophones);
  window.addEventListener("pagehide", () => {
    if (voiceService.inCall) voiceService.leave();
  });

  voiceService.addEventListener("change", (e) => {
    if (e.detail.what === "speaking" || e.detail.what === "participants") renderParticipants();
    else render();
  });
  voiceService.addEventListener("state", (e) => {
    render();
    if (e.detail.state === "connected") hideAlert();
    if (e.detail.state === "closed") showSignin();
  });
  voiceService.addEventListener("notice", (e) => {
    const { level, text, code } = e.detail;
    if (level === "error" || level === "warning") showAlert(text, level, code);
  });
}

async function main() {
  installDebugApi();
  wire();
  $("name-input").value = localStorage.getItem(STORE.name) ?? "";
  $("token-input").value = sessionStorage.getItem(STORE.token) ?? "";
  $("processing-toggle").checked = localStorage.getItem(STORE.processing) !== "false";
  voiceService.micDeviceId = localStorage.getItem(STORE.mic) ?? "";
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("channel")) $("channel-input").value = hash.get("channel");
  await loadConfig();
  showSignin();
  document.body.dataset.ready = "true";
}

main();
