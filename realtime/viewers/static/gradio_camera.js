// js_on_load of the Gradio app's camera component (gr.HTML). Gradio provides `element` (this
// component's root) and `server` (the component's Python server functions: offer, hangup).
// The webcam goes to the server over WebRTC (aiortc on Gradio's event loop); spotter events and
// stats come back on the "events" data channel and are shown in the overlay.
const st = { status: "idle", events: 0, stats: null, stream: null, pc: null, media: null };
window.fesnetCamera = st; // read by the browser tests

const q = (sel) => element.querySelector(sel);
const setStatus = (text) => { st.status = text; q(".fes-status").textContent = text; };

function showStats(s) {
  st.stats = s;
  const lat = s.event_latency_p50_ms ?? s.score_latency_p50_ms;
  q(".fes-overlay").textContent =
    `camera ${s.input_fps.toFixed(1)} fps · spotter ${s.fps.toFixed(1)} fps · ` +
    `latency ${lat == null ? "-" : Math.round(lat) + " ms"} · face ${s.state}`;
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
