"""INT8/FP8 calibration windows: drawn from aligned clips, in the format the TensorRT path reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from calibration_helpers import make_clip

from fesnet.calibration import cli
from fesnet.model.quantization_windows import (
    read_calibration_windows,
    sample_windows,
    write_windows,
)


def test_windows_are_balanced_distinct_and_readable_by_the_export_path(tmp_path: Path) -> None:
    videos = [
        make_clip(120, [(40, 70, 2)], rest=0.1, rest_noise=0.05, seed=1),
        make_clip(100, [(10, 20, 1)], rest=0.1, rest_noise=0.05, seed=2),
        make_clip(20, [], rest=0.1, rest_noise=0.05, seed=3),  # shorter than a window: skipped
    ]
    windows, names, geom = sample_windows(videos, 40, 32, expression_fraction=0.5, seed=0)
    assert geom is None  # no geometry channel asked for
    assert windows.shape == (40, 32, 112, 112, 3) and windows.dtype == np.uint8
    assert len(set(names)) == 40
    per_video = {n.rsplit("@", 1)[0] for n in names}
    assert per_video == {"clip1", "clip2"}
    by_id = {v.video_id: v for v in videos}
    n_expr = 0
    for w, name in zip(windows, names, strict=True):
        vid, start = name.rsplit("@", 1)
        v = by_id[vid]
        assert np.array_equal(w, v.crops[int(start) : int(start) + 32])
        n_expr += bool(v.labels[int(start) : int(start) + 32].any())
    assert 10 <= n_expr <= 30
    again, _, _ = sample_windows(videos, 40, 32, expression_fraction=0.5, seed=0)
    assert np.array_equal(again, windows)
    path = write_windows(tmp_path / "calib.npz", windows, names)
    assert np.array_equal(read_calibration_windows(path, 32), windows)


def test_a_geometry_network_gets_its_windows_geometry_vectors(tmp_path: Path) -> None:
    """With a geometry config the windows' vectors are stored beside them and read back; they
    are the slices of each whole video's vectors (computed from its start, as a stream does)."""
    import dataclasses

    from fesnet.model.geometry import GeometryConfig, geometry_features
    from fesnet.model.quantization_windows import read_calibration_geometry

    rng = np.random.default_rng(0)
    videos = []
    for i in (1, 2):
        v = make_clip(100, [(40, 70, 2)], rest=0.1, rest_noise=0.05, seed=i)
        lm = (rng.normal(56, 15, (468, 2)) + rng.normal(0, 0.2, (100, 468, 2))).astype(np.float32)
        videos.append(dataclasses.replace(v, landmarks=lm))
    windows, names, geom = sample_windows(videos, 12, 32, seed=0, geometry=GeometryConfig())
    assert geom is not None and geom.shape[:2] == (12, 32)
    vid, start = names[0].rsplit("@", 1)
    whole = geometry_features(next(v for v in videos if v.video_id == vid).landmarks)
    np.testing.assert_array_equal(geom[0], whole[int(start) : int(start) + 32])
    path = write_windows(tmp_path / "calib.npz", windows, names, geom)
    np.testing.assert_array_equal(read_calibration_geometry(path), geom)


def test_bad_requests_are_clear() -> None:
    videos = [make_clip(40, [], rest=0.1, rest_noise=0.05, seed=1)]
    with pytest.raises(ValueError, match="only 9 distinct windows"):
        sample_windows(videos, 10, 32)
    with pytest.raises(ValueError, match="no video is at least 32"):
        sample_windows([make_clip(10, [], 0.1, 0.0, 1)], 1, 32)


def test_cli_help_and_missing_checkpoint(tmp_path: Path, capsys) -> None:
    assert cli.main([]) == 2
    code = cli.main(["fit", "--checkpoint", str(tmp_path / "none.pt"), "--out",
                     str(tmp_path / "m.json")])
    assert code == 2 and "not found" in capsys.readouterr().err
    assert cli.main(["profiles", "--profiles-dir", str(tmp_path)]) == 0
    assert cli.main(["profiles", "nobody", "--profiles-dir", str(tmp_path)]) == 2
