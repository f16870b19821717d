"""fesnet-eval: FESNet and the landmark peer on the same videos, through one code path."""

from __future__ import annotations

import numpy as np
import torch
from toy_videos import toy_video, with_landmarks

from fesnet.model.backends import TorchBackend
from fesnet.model.evaluate import Method, evaluate, grouped_tables, side_by_side
from fesnet.model.fesnet import FESNet, FESNetConfig
from fesnet.model.head import with_geometry
from fesnet.model.merger import MergerConfig
from fesnet.model.peer import LandmarkPeer, PeerConfig


def test_both_methods_score_the_same_videos_and_write_csv_rows(two_identities) -> None:
    base = two_identities[0].landmarks * (112 / 256)
    videos = [with_landmarks(toy_video(i, n=400), base, i) for i in range(2)]
    torch.manual_seed(0)
    net = with_geometry(FESNet(FESNetConfig.tiny())).eval()
    peer_cfg = PeerConfig(k=3.0)
    methods = [
        Method("fesnet", TorchBackend(net), MergerConfig(), 8),
        Method("landmarks", LandmarkPeer(peer_cfg), peer_cfg.merger_config(), 8),
    ]
    csv_rows: list[dict] = []
    tables = {}
    for m in methods:
        rows = evaluate(m, videos, csv_rows)
        assert [r[1] for r in rows] == [v.intervals for v in videos]  # same truth for both
        tables[m.name] = grouped_tables(rows, {"all": [0, 1], "first": [0]})
    # The toy's lip corners move 3 px during both expressions: the peer finds them.
    peer = tables["landmarks"]["all"]
    assert peer.counts["overall"].tp >= 3, peer.to_markdown()
    assert {r["method"] for r in csv_rows} >= {"landmarks"}
    assert all(r["vid"] in {v.video_id for v in videos} for r in csv_rows)
    text = side_by_side(tables)
    assert "| fesnet | all (2) |" in text and "| landmarks | first (1) |" in text
    assert np.isfinite(tables["fesnet"]["all"].acc)
