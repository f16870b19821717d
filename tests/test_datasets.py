"""CAS(ME)^2 / SAMM-LV loaders and splits on small fixture trees in the published layouts."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from openpyxl import Workbook

from fesnet.model.data import casme2, sammlv
from fesnet.model.data.common import (
    DatasetError,
    VideoRecord,
    labels_from_intervals,
    resolve_offset,
)
from fesnet.model.data.splits import kfold_by_video, leave_one_subject_out
from fesnet.model.metrics import labels_to_intervals

TINY_JPG = cv2.imencode(".jpg", np.full((8, 8, 3), 120, np.uint8))[1].tobytes()


def write_frames(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(TINY_JPG)


def write_xlsx(path: Path, sheets: list[tuple[str, list[list[object]]]]) -> None:
    wb = Workbook()
    wb.remove(wb.active)
    for title, rows in sheets:
        ws = wb.create_sheet(title)
        for row in rows:
            ws.append(row)
    wb.save(path)


CASME_LABELS = [
    [1, "anger1_1", 5, 8, 12, "4", "negative", "macro-expression", "anger"],
    [1, "anger1_2", 20, 22, 0, "4", "negative", "micro-expression", "anger"],
    [2, "disgust1_1", 3, 4, 6, "9", "negative", "micro-expression", "disgust"],
]
RULE1 = [["s15", 15, 1], ["s16", 16, 2]]
RULE2 = [[101, "disgust1"], ["0401", "anger1"]]


@pytest.fixture()
def casme_root(tmp_path: Path) -> Path:
    root = tmp_path / "casme2"
    write_frames(root / "rawpic/s15/15_0401girlcrashing", [f"img{k}.jpg" for k in range(1, 31)])
    write_frames(root / "rawpic/s16/16_0101disgustingteeth", [f"img{k}.jpg" for k in range(1, 11)])
    write_frames(root / "rawpic/s16/16_0401girlcrashing", [f"img{k}.jpg" for k in range(1, 6)])
    write_xlsx(
        root / "CAS(ME)^2code_final.xlsx",
        [("CASFEcode_final", CASME_LABELS), ("naming rule1", RULE1), ("naming rule2", RULE2)],
    )
    return root


def test_casme2_records(casme_root: Path):
    records = casme2.load_records(casme_root)
    by_id = {r.video_id: r for r in records}
    assert set(by_id) == {
        "casme2/s15/15_0401girlcrashing",
        "casme2/s16/16_0101disgustingteeth",
        "casme2/s16/16_0401girlcrashing",
    }
    anger = by_id["casme2/s15/15_0401girlcrashing"]
    assert anger.fps == 30.0 and anger.subject == "s15" and anger.n_frames == 30
    assert anger.frames[0].name == "img1.jpg" and anger.frames[9].name == "img10.jpg"
    # 1-based frame numbers -> 0-based indices; offset 0 mirrored around the apex (22 + 2 = 24).
    assert anger.intervals == [(4, 11, 2), (19, 23, 1)]
    assert by_id["casme2/s16/16_0101disgustingteeth"].intervals == [(2, 5, 1)]
    assert by_id["casme2/s16/16_0401girlcrashing"].intervals == []


def test_casme2_errors(casme_root: Path, tmp_path: Path):
    with pytest.raises(DatasetError, match="frames folder not found"):
        casme2.load_records(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="label file not found"):
        casme2.load_records(casme_root, labels_path=casme_root / "missing.xlsx")
    bad = casme_root / "broken.xlsx"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="cannot read label file"):
        casme2.load_records(casme_root, labels_path=bad)
    short = casme_root / "short.xlsx"
    write_xlsx(short, [("a", [[1, "anger1_1", 5, 8]]), ("b", RULE1), ("c", RULE2)])
    with pytest.raises(DatasetError, match="expected >= 8 columns"):
        casme2.load_records(casme_root, labels_path=short)
    one_sheet = casme_root / "one.xlsx"
    write_xlsx(one_sheet, [("a", CASME_LABELS)])
    with pytest.raises(DatasetError, match="expected 3 sheets"):
        casme2.load_records(casme_root, labels_path=one_sheet)
    missing_video = casme_root / "missing_video.xlsx"
    # Subject 1 (s15) has no disgust1 (code 0101) video.
    rows = [*CASME_LABELS, [1, "disgust1_1", 1, 2, 3, "9", "neg", "micro-expression", "x"]]
    write_xlsx(missing_video, [("a", rows), ("b", RULE1), ("c", RULE2)])
    with pytest.raises(DatasetError, match="missing video rawpic/s15/"):
        casme2.load_records(casme_root, labels_path=missing_video)
    bad_type = casme_root / "bad_type.xlsx"
    write_xlsx(
        bad_type,
        [("a", [[1, "anger1_1", 5, 8, 12, "4", "neg", "smile", "x"]]), ("b", RULE1), ("c", RULE2)],
    )
    with pytest.raises(DatasetError, match="macro-expression or micro-expression"):
        casme2.load_records(casme_root, labels_path=bad_type)


SAMM_HEADER = [
    "Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset", "Duration", "Type",
    "Action Units", "Notes",
]


@pytest.fixture()
def samm_root(tmp_path: Path) -> Path:
    root = tmp_path / "samm"
    write_frames(root / "006_1", [f"006_1_{k:04d}.jpg" for k in range(1, 401)])
    write_frames(root / "007_3", [f"007_3_{k:04d}.jpg" for k in range(0, 100)])
    rows: list[list[object]] = [
        ["SAMM Long Videos"],
        ["Released 2019"],
        [],
        SAMM_HEADER,
        ["006", "006_1_1", 1, 11, 50, 200, 190, "Macro", "12", ""],
        ["006", "006_1_2", 1, 301, 320, -1, 0, "Micro - 1/2", "4", "apex only"],
        ["007", "007_3_1", 2, 10, 20, 40, 30, "Micro - 1/2", "1+2", ""],
    ]
    write_xlsx(root / "SAMM_LongVideos_V1_Release.xlsx", [("FACS_Movement_Only", rows)])
    return root


def test_sammlv_records(samm_root: Path):
    records = sammlv.load_records(samm_root)
    by_id = {r.video_id: r for r in records}
    assert set(by_id) == {"sammlv/006_1", "sammlv/007_3"}
    a = by_id["sammlv/006_1"]
    assert a.fps == 200.0 and a.subject == "006" and a.n_frames == 400
    assert a.frames[0].name == "006_1_0001.jpg"
    assert a.intervals == [(10, 199, 2), (300, 338, 1)]  # offset -1 mirrored: 320 + 19 = 339
    # Frame numbers map through the files present (this video's files start at 0000).
    assert by_id["sammlv/007_3"].intervals == [(10, 40, 1)]


def test_sammlv_errors(samm_root: Path, tmp_path: Path):
    with pytest.raises(DatasetError, match="SAMM-LV folder not found"):
        sammlv.load_records(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no label xlsx"):
        sammlv.load_records(empty)
    no_header = samm_root / "no_header.xlsx"
    write_xlsx(no_header, [("s", [["Subject", "File", "Onset"], ["006", "006_1_1", 1]])])
    with pytest.raises(DatasetError, match="no sheet has a header row"):
        sammlv.load_records(samm_root, labels_path=no_header)
    missing = samm_root / "missing.xlsx"
    write_xlsx(missing, [("s", [SAMM_HEADER, ["009", "009_2_1", 1, 5, 6, 7, 2, "Macro"]])])
    with pytest.raises(DatasetError, match="missing video folder"):
        sammlv.load_records(samm_root, labels_path=missing)
    not_number = samm_root / "nan.xlsx"
    write_xlsx(not_number, [("s", [SAMM_HEADER, ["006", "006_1_1", 1, "x", 6, 7, 2, "Macro"]])])
    with pytest.raises(DatasetError, match="Onset is not a number"):
        sammlv.load_records(samm_root, labels_path=not_number)


def test_resolve_offset_and_label_helpers():
    assert resolve_offset(10, 15, 30) == 30
    assert resolve_offset(10, 15, 0) == 20
    assert resolve_offset(10, 15, -1) == 20
    assert resolve_offset(10, 0, 0) == 10
    labels = labels_from_intervals([(2, 4, 1), (7, 20, 2)], 10)
    assert labels.tolist() == [0, 0, 1, 1, 1, 0, 0, 2, 2, 2]
    assert labels_to_intervals(labels) == [(2, 4, 1), (7, 9, 2)]


def make_records(n_subjects: int, per_subject: int) -> list[VideoRecord]:
    return [
        VideoRecord(f"v{s}_{i}", f"s{s}", 30.0, [], [])
        for s in range(n_subjects)
        for i in range(per_subject)
    ]


def test_leave_one_subject_out():
    records = make_records(4, 3)
    splits = leave_one_subject_out(records)
    assert [s for s, _, _ in splits] == ["s0", "s1", "s2", "s3"]
    for subject, train, test in splits:
        assert {r.subject for r in test} == {subject}
        assert subject not in {r.subject for r in train}
        assert len(train) + len(test) == len(records)


def test_kfold_by_video():
    records = make_records(3, 4)
    splits = kfold_by_video(records, k=5, seed=1)
    assert len(splits) == 5
    tested = [r.video_id for _, test in splits for r in test]
    assert sorted(tested) == sorted(r.video_id for r in records)
    for train, test in splits:
        assert not {r.video_id for r in train} & {r.video_id for r in test}
        assert len(test) in (2, 3)
    def ids(splits_: list) -> list[list[str]]:
        return [[r.video_id for r in test] for _, test in splits_]

    assert ids(kfold_by_video(records, k=5, seed=1)) == ids(splits)
    with pytest.raises(ValueError):
        kfold_by_video(records[:3], k=5)
