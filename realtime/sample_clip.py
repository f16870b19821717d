"""The bundled sample clip: a real face of a test identity (never trained on) animated with
synthetic expressions and distractors, 20 s at 30 FPS, 640x480, and its labelled intervals
(scripts/make_sample_clip.py writes both). ``fesnet-spot run`` without a source, the viewers'
"Play sample clip", the benchmarks and the tests read it from here."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
SAMPLE_CLIP = ASSETS / "sample.mp4"
SAMPLE_TRUTH = ASSETS / "sample_truth.json"
