// js_on_load of the Gradio app's camera component (gr.HTML). Gradio provides `element` (this
// component's root) and `server` (the component's Python server functions: offer, hangup, view).
// The webcam goes to the server over WebRTC (aiortc on Gradio's event loop); spotter events and
// stats come back on the "events" data channel and are shown in the overlay. The panel also polls
// `view` for what the tab's session shows: the tracked face's box (drawn over the webcam or the
// replay), the newest event line and, for a replayed video, its frames, so a replay plays here
// with the same box and overlay as the webcam.
const st = {
  status: "idle", events: 0, stats: null, stream: null, pc: null, media: null,
  panel: { mode: "none", shown: null, frames: 0, box: null, event: "" },
};
window.fesnetCamera = st; // read by the browser tests
const POLL_MS = 80;

const q = (sel) => element.querySelector(sel);
const setStatus = (text) => { st.status = text; q(".fes-status").textContent = text; };

function showStats(s) {
  st.stats = s;
  const lat = s.event_latency_p50_ms ?? s.score_latency_p50_ms;
  const cam = s.frames_in ? `camera ${s.input_fps.toFixed(1)} fps · ` : "";
  q(".fes-stats").textContent =
    `${cam}spotter ${s.fps.toFixed(1)} fps · ` +
    `latency ${lat == null ? "-" : Math.round(lat) + " ms"} · face ${s.state}`;
}

function showBox(box) {
  const el = q(".fes-box");
  st.panel.box = box;
  el.hidden = !box;
  if (!box) return;
  const [x0, y0, x1, y1] = box;
  el.style.left = `${100 * x0}%`;
  el.style.top = `${100 * y0}%`;
  el.style.width = `${100 * (x1 - x0)}%`;
  el.style.height = `${100 * (y1 - y0)}%`;
}

function showPanel(v) {
  const p = st.panel;
  p.mode = v.mode;
  const replay = v.mode === "replay";
  q("video").hidden = replay;
  q(".fes-replay").hidden = !replay;
  if (v.mode === "none") {
    showBox(null);
    if (!st.pc) q(".fes-stats").textContent = "no stream";
    q(".fes-event").textContent = "";
    return;
  }
  if (replay && v.image) {
    q(".fes-replay").src = v.image;
    p.shown = v.seq;
    p.frames += 1;
  }
  if (replay || !st.pc) showStats(v.stats); // a live camera's stats come on its data channel
  showBox(replay || st.pc ? v.box : null);
  p.event = v.event;
  q(".fes-event").textContent = v.event;
}

async function poll() {
  for (;;) {
    try {
      if (!document.hidden) showPanel(await server.view({ seen: st.panel.shown }));
    } catch (err) {
      // the server restarts or is busy: the next poll tries again
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function waitIce(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
    setTimeout(resolve, 3000);
  });
}

async function start() {
  q(".fes-start").disabled = true;
  try {
    setStatus("opening camera");
    st.media = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } },
      audio: false,
    });
    q("video").srcObject = st.media;
    const pc = new RTCPeerConnection({ iceServers: [] });
    st.pc = pc;
    const channel = pc.createDataChannel("events");
    channel.onmessage = (msg) => {
      const data = JSON.parse(msg.data);
      if (data.type === "stats") showStats(data);
      else if (data.type !== "end") st.events += 1;
    };
    for (const track of st.media.getVideoTracks()) {
      track.contentHint = "detail";
      pc.addTrack(track, st.media);
    }
    pc.onconnectionstatechange = () => setStatus(`camera ${pc.connectionState}`);
    await pc.setLocalDescription(await pc.createOffer());
    await waitIce(pc);
    setStatus("signalling");
    const answer = await server.offer({ sdp: pc.localDescription.sdp, type: "offer" });
    if (answer.error) throw new Error(answer.error);
    st.stream = answer.stream;
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    q(".fes-stop").disabled = false;
  } catch (err) {
    setStatus(`error: ${err.message}`);
    q(".fes-start").disabled = false;
  }
}

async function stop() {
  q(".fes-stop").disabled = true;
  try {
    await server.hangup({});
  } finally {
    if (st.pc) st.pc.close();
    if (st.media) st.media.getTracks().forEach((t) => t.stop());
    st.pc = null;
    setStatus("stopped");
    q(".fes-start").disabled = false;
  }
}

q(".fes-start").addEventListener("click", start);
q(".fes-stop").addEventListener("click", stop);
poll();
