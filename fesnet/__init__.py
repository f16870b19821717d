"""FESNet live spotter: ``fesnet.model`` (network, data, training), ``fesnet.realtime``
(streaming spotter and viewers) and ``fesnet.calibration`` (per-person thresholds)."""
