// voicebot browser client: microphone -> /ws as pipecat protobuf AudioRawFrames (16 kHz mono PCM16),
// bot audio <- /ws played as it arrives, live transcript, moderation verdicts, per-turn latency.
// No third-party code: the few protobuf messages of pipecat's frames.proto are encoded by hand below.
"use strict";

// ---- protobuf (pipecat frames.proto: Frame{oneof text=1 audio=2 transcription=3 message=4 interruption=5}) ----
function varint(n) {
  const out = [];
  while (n > 127) { out.push((n & 127) | 128); n = Math.floor(n / 128); }
  out.push(n);
  return out;
}
function lenField(field, bytes) { return [...varint((field << 3) | 2), ...varint(bytes.length), ...bytes]; }
function encodeAudio(pcm16, rate) {
  const inner = [...lenField(3, new Uint8Array(pcm16.buffer)), ...varint(4 << 3), ...varint(rate),
                 ...varint(5 << 3), ...varint(1)];
  return new Uint8Array(lenField(2, inner));
}
function encodeMessage(obj) {
  const data = new TextEncoder().encode(JSON.stringify(obj));
  return new Uint8Array(lenField(4, lenField(1, data)));
}
function readFields(buf) {
  const fields = {};
  let i = 0;
  const readVarint = () => {
    let n = 0, mul = 1, b;
    do { b = buf[i++]; n += (b & 127) * mul; mul *= 128; } while (b & 128);
    return n;
  };
  while (i < buf.length) {
    const key = readVarint(), field = key >>> 3, wire = key & 7;
    if (wire === 0) fields[field] = readVarint();
    else if (wire === 2) { const n = readVarint(); fields[field] = buf.subarray(i, i + n); i += n; }
    else if (wire === 1) i += 8; else if (wire === 5) i += 4; else break;
  }
  return fields;
}
const KINDS = {1: "text", 2: "audio", 3: "transcription", 4: "message", 5: "interruption"};
function decodeFrame(data) {
  const outer = readFields(new Uint8Array(data));
  const num = Object.keys(outer)[0];
  const inner = readFields(outer[num] || new Uint8Array());
  const text = (b) => b ? new TextDecoder().decode(b) : "";
  switch (KINDS[num]) {
    case "audio": return {kind: "audio", audio: inner[3], rate: inner[4] || 24000, channels: inner[5] || 1};
    case "transcription": return {kind: "transcription", text: text(inner[3]), user: text(inner[4])};
    case "message": return {kind: "message", data: JSON.parse(text(inner[1]) || "null")};
    case "interruption": return {kind: "interruption"};
    case "text": return {kind: "text", text: text(inner[3])};
    default: return {kind: "unknown"};
  }
}

// ---- state ----
const $ = (id) => document.getElementById(id);
const IN_RATE = 16000, BLOCK = 320;  // 20 ms
const state = {ws: null, capture: null, play: null, nextTime: 0, sources: [], turns: {}, played: [],
               playedRate: 24000, session: null, closed: null, events: [], sentSecs: 0, startedAt: 0};
window.voicebot = state;  // read by tests and curious users

function turnBox(n) {
  if (!state.turns[n]) {
    const div = document.createElement("div");
    div.className = "turn";
    div.innerHTML = '<div class="user"></div><div class="bot"></div><div class="verdict"></div><div class="lat"></div>';
    $("log").prepend(div);
    state.turns[n] = div;
  }
  return state.turns[n];
}
let lastTurn = 0;

function onMessage(msg) {
  if (!msg || msg.label !== "voicebot") return;
  state.events.push(msg);
  if (msg.type === "session") {
    state.session = msg;
    $("status").textContent = `connected: ${msg.persona} (${msg.mode})`;
    if (msg.report) {
      const token = new URLSearchParams(location.search).get("token");
      $("report").href = msg.report + (token ? `?token=${encodeURIComponent(token)}` : "");
      $("report").hidden = false;
    }
  } else if (msg.type === "event") {
    const d = msg.data || {};
    if (d.turn) lastTurn = d.turn;
    if (msg.kind === "llm.sentence") {
      // The server never sends the text of a blocked (or never checked) sentence: only that it was cut.
      const span = document.createElement("span");
      span.textContent = (d.fate === "spoken" ? d.text : `[${d.fate} by moderation]`) + " ";
      if (d.fate !== "spoken") span.className = d.fate === "blocked" ? "blocked" : "cut";
      turnBox(d.turn || lastTurn).querySelector(".bot").append(span);
    } else if (msg.kind === "moderation.verdict" && d.verdict && d.verdict.allowed === false) {
      turnBox(d.turn || lastTurn).querySelector(".verdict").textContent +=
        `${d.stage === "input" ? "your turn" : "a reply sentence"} was blocked ` +
        `(${(d.verdict.categories || []).join(", ") || "flagged"}). `;
    } else if (msg.kind === "bot.interrupted") {
      turnBox(d.turn || lastTurn).querySelector(".bot").classList.add("cut");
    }
  } else if (msg.type === "turn") {
    const box = turnBox(msg.turn);
    box.querySelector(".user").textContent = msg.user || "(nothing recognised)";
    const bot = box.querySelector(".bot");
    bot.textContent = (msg.said || "(no reply)") + (msg.interrupted ? " [interrupted]" : "") +
      (msg.refused ? " [refusal: moderation blocked part of this turn]" : "");
    if (msg.refused) bot.classList.add("refused");
    const t = msg.timings || {};
    const ms = (v) => v == null ? "-" : `${Math.round(v)} ms`;
    box.querySelector(".lat").textContent =
      `voice-to-voice ${ms(t.v2v_ms)} | stt ${ms(t.stt_ms)} | llm first token ${ms(t.llm_ttft_ms)} | ` +
      `tts first audio ${ms(t.tts_ttfa_ms)}`;
  } else if (msg.type === "drain") {
    $("status").textContent = msg.reason;
  }
}

function playAudio(f) {
  const ctx = state.play;
  const pcm = new Int16Array(f.audio.buffer.slice(f.audio.byteOffset, f.audio.byteOffset + f.audio.byteLength));
  const frames = pcm.length / f.channels;
  const buffer = ctx.createBuffer(1, frames, f.rate);
  const ch = buffer.getChannelData(0);
  for (let i = 0; i < frames; i++) ch[i] = pcm[i * f.channels] / 32768;
  const src = ctx.createBufferSource();
  src.buffer = buffer;
  src.connect(ctx.destination);
  // A reply starts after a 100 ms jitter buffer; later frames play back to back.
  const at = state.nextTime > ctx.currentTime ? state.nextTime : ctx.currentTime + 0.1;
  src.start(at);
  state.nextTime = at + buffer.duration;
  state.sources.push(src);
  src.onended = () => { state.sources = state.sources.filter((s) => s !== src); };
  state.playedRate = f.rate;
  state.played.push({at, pcm: ch.slice(0)});
}

function interrupt() {
  const now = state.play.currentTime;
  for (const s of state.sources) { try { s.stop(); } catch (e) { /* already ended */ } }
  state.sources = [];
  state.nextTime = now;
  // What was scheduled but never heard is not part of what the page played.
  state.played = state.played.filter((p) => p.at < now).map((p) => {
    const keep = Math.min(p.pcm.length, Math.round((now - p.at) * state.playedRate));
    return {at: p.at, pcm: p.pcm.subarray(0, keep)};
  });
}

// The audio the page played, as one mono track (for tests: it transcribes back to the logged reply).
state.playedSamples = () => {
  if (!state.played.length) return [];
  const t0 = state.played[0].at, rate = state.playedRate;
  const end = state.played.reduce((m, p) => Math.max(m, p.at + p.pcm.length / rate), t0);
  const out = new Float32Array(Math.ceil((end - t0) * rate) + 1);
  for (const p of state.played) out.set(p.pcm, Math.round((p.at - t0) * rate));
  return Array.from(out, (v) => Math.round(v * 32767));
};

async function start() {
  $("start").disabled = true;
  state.session = null;
  const params = new URLSearchParams(location.search);
  const mic = await navigator.mediaDevices.getUserMedia({audio: {
    echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1}});
  state.capture = new AudioContext({sampleRate: IN_RATE});
  state.play = new AudioContext();
  await state.capture.audioWorklet.addModule("capture-worklet.js");
  const node = new AudioWorkletNode(state.capture, "voicebot-capture");
  state.capture.createMediaStreamSource(mic).connect(node);
  const query = new URLSearchParams();
  if (params.get("token")) query.set("token", params.get("token"));
  const persona = $("persona").value.trim() || params.get("persona");
  if (persona) query.set("persona", persona);
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws?${query}`);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  let pending = new Int16Array(0);
  node.port.onmessage = (e) => {
    // Nothing is sent before the session is ready (its "session" message): that speech would be stale.
    if (ws.readyState !== WebSocket.OPEN || !state.session) return;
    const block = e.data, merged = new Int16Array(pending.length + block.length);
    merged.set(pending);
    for (let i = 0; i < block.length; i++) merged[pending.length + i] = Math.max(-1, Math.min(1, block[i])) * 32767;
    let i = 0;
    for (; i + BLOCK <= merged.length; i += BLOCK) {
      ws.send(encodeAudio(merged.slice(i, i + BLOCK), IN_RATE));
      state.sentSecs += BLOCK / IN_RATE;
    }
    pending = merged.slice(i);
  };
  ws.onopen = () => {
    $("status").textContent = "connected";
    $("stop").disabled = false;
    state.startedAt = performance.now();
  };
  ws.onmessage = (e) => {
    const f = decodeFrame(e.data);
    if (f.kind === "audio") playAudio(f);
    else if (f.kind === "interruption") interrupt();
    else if (f.kind === "transcription") turnBox(lastTurn || 1).querySelector(".user").textContent = f.text;
    else if (f.kind === "message") onMessage(f.data);
  };
  ws.onclose = (e) => {
    state.closed = {code: e.code, reason: e.reason};
    $("status").textContent = `closed (${e.code}${e.reason ? ": " + e.reason : ""})`;
    $("start").disabled = false;
    $("stop").disabled = true;
    mic.getTracks().forEach((t) => t.stop());
    state.capture.close();
  };
}

$("start").onclick = () => start().catch((err) => {
  $("status").textContent = `could not start: ${err.message || err}`;
  $("start").disabled = false;
});
$("stop").onclick = () => state.ws && state.ws.close(1000, "user stopped");
$("persona").value = new URLSearchParams(location.search).get("persona") || "";
