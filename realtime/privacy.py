"""No analytics, no telemetry, no update checks: a local service that films faces does not phone
home. Left to their defaults, the libraries make every ``fesnet-spot serve`` start contact
api.gradio.app (Gradio's analytics and version check), huggingface.co (three times) and ONNX
Runtime's telemetry host (mobile.events.data.microsoft.com).

The switches are the libraries' own environment variables, set for this process (and its
children) before the libraries are imported: :func:`disable_telemetry` runs first thing in the
``fesnet-spot`` entry point, and the Gradio app passes ``analytics_enabled=False`` explicitly.
Nothing here can be turned back on by a flag: there is no feature of the spotter that needs it.
"""

from __future__ import annotations

import os
import sys

TELEMETRY_OFF = {
    "GRADIO_ANALYTICS_ENABLED": "False",  # Gradio: usage analytics and the version check
    "HF_HUB_OFFLINE": "1",  # huggingface_hub (imported by Gradio): no calls to the Hub
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "ORT_DISABLE_TELEMETRY": "1",  # ONNX Runtime's 1DS telemetry
    "DO_NOT_TRACK": "1",  # the cross-tool convention, for anything else that honours it
}


def disable_telemetry() -> None:
    """Turn every known analytics/telemetry channel off for this process."""
    os.environ.update(TELEMETRY_OFF)
    ort = sys.modules.get("onnxruntime")
    if ort is not None:  # already imported: its runtime switch as well
        ort.disable_telemetry_events()
