// FESNet remote camera page: send this browser's camera to POST /offer, show the events that
// come back on the "events" data channel. The token (if the server needs one) is read from the
// page URL (#token=..., or ?token=...), sent only as a Bearer header, and removed from the
// address bar (so it is not bookmarked, shared or sent on in a Referer).
"use strict";

function takeToken() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  const query = new URLSearchParams(location.search);
  const token = fromHash || query.get("token");
  if (token) {
    query.delete("token");
    const rest = query.toString();
    history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : ""));
  }
  return token;
}
const TOKEN = takeToken();

const state = { pc: null, stream: null, events: 0, stats: null };
window.fesnet = state; // read by the browser tests

const $ = (id) => document.getElementById(id);

function setStatus(text) {
  $("status").textContent = text;
  state.status = text;
}

// Which face regions moved (final events of a model with the geometry channel), as the
// Python viewers write it: the largest shares of at least 10 %, at most three.
function movedRegions(regions) {
  if (!regions) return "";
  const parts = Object.entries(regions)
    .filter(([, share]) => share >= 0.1)
    .slice(0, 3)
    .map(([name, share]) => `${name} ${Math.round(share * 100)}%`);
  return parts.length ? `  moved: ${parts.join(", ")}` : "";
}

function describe(ev) {
  if (ev.type === "expression") {
    const span = ev.offset_s != null
      ? `${ev.onset_s.toFixed(2)}-${ev.offset_s.toFixed(2)} s`
      : `${ev.onset_s.toFixed(2)} s`;
    // An onset's class is provisional: its final decides (docs/EVENTS.md).
    const label = ev.state === "onset" ? `${ev.label}? ` : `${ev.label} `;
    const note = ev.state === "onset" ? " class provisional" : "";
    return `${label}${ev.state} ${span} p=${(ev.score ?? 0).toFixed(2)} ` +
      `(${Math.round(ev.latency_ms ?? 0)} ms)${note}${movedRegions(ev.regions)}`;
  }
  return `${ev.type}: ${ev.message ?? ""} @ ${(ev.t_s ?? 0).toFixed(2)} s`;
}

function logEvent(ev) {
  state.events += 1;
  const line = document.createElement("div");
  line.className = ev.type === "expression" ? ev.label : (ev.type.startsWith("face") ? "face" : "");
  line.textContent = describe(ev);
  $("log").prepend(line);
}

function showStats(s) {
  state.stats = s;
  const lat = s.event_latency_p50_ms ?? s.score_latency_p50_ms;
  $("stats").textContent =
    `stream ${s.stream}   face: ${s.state}\n` +
    `camera ${s.input_fps.toFixed(1)} fps   spotter ${s.fps.toFixed(1)} fps   ` +
    `dropped ${s.dropped}\n` +
    `latency p50 ${lat == null ? "-" : lat.toFixed(0) + " ms"}   events ${s.events}` +
    calibrationLine(s.calibration);
  $("skip").disabled = !(s.calibration && s.calibration.phase === "calibrating");
}

function calibrationLine(c) {
  if (!c) return "";
  if (c.phase === "calibrating") {
    return `\ncalibrating ${Math.round(100 * c.progress)}%: keep a neutral face (or skip)`;
  }
  if (c.phase === "calibrated") {
    return `\ncalibrated: on ${c.on_threshold.toFixed(3)} / off ${c.off_threshold.toFixed(3)}`;
  }
  return `\ncalibration ${c.phase}`;
}

function skipCalibration() {
  if (state.channel && state.channel.readyState === "open") {
    state.channel.send(JSON.stringify({ type: "skip_calibration" }));
  }
}

async function waitIceComplete(pc) {
  if (pc.iceGatheringState === "complete") return;
  await new Promise((resolve) => {
    const check = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(resolve, 3000);
  });
}

async function start() {
  $("start").disabled = true;
  try {
    setStatus("opening camera");
    state.stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } },
      audio: false,
    });
    $("video").srcObject = state.stream;
    const pc = new RTCPeerConnection({ iceServers: [] });
    state.pc = pc;
    const channel = pc.createDataChannel("events");
    state.channel = channel;
    channel.onmessage = (msg) => {
      const data = JSON.parse(msg.data);
      if (data.type === "stats") showStats(data);
      else if (data.type !== "end") logEvent(data);
    };
    for (const track of state.stream.getVideoTracks()) {
      track.contentHint = "detail"; // keep the resolution, drop frames first
      pc.addTrack(track, state.stream);
    }
    pc.onconnectionstatechange = () => setStatus(`connection ${pc.connectionState}`);
    await pc.setLocalDescription(await pc.createOffer());
    await waitIceComplete(pc);
    const headers = { "Content-Type": "application/json" };
    if (TOKEN) headers.Authorization = `Bearer ${TOKEN}`;
    setStatus("signalling");
    const resp = await fetch("/offer", {
      method: "POST",
      headers,
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
    });
    const answer = await resp.json();
    if (!resp.ok) throw new Error(answer.error || `HTTP ${resp.status}`);
    await pc.setRemoteDescription(answer);
    state.streamId = answer.stream;
    $("stop").disabled = false;
  } catch (err) {
    setStatus(`error: ${err.message}`);
    $("start").disabled = false;
  }
}

function stop() {
  if (state.pc) state.pc.close();
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.pc = null;
  setStatus("stopped");
  $("start").disabled = false;
  $("stop").disabled = true;
}

$("start").onclick = start;
$("stop").onclick = stop;
$("skip").onclick = skipCalibration;
if (new URLSearchParams(location.search).has("autostart")) start();
