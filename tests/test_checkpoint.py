import json

import pytest
import torch

from fesnet.model import checkpoint
from fesnet.model.checkpoint import CheckpointError
from fesnet.model.fesnet import FESNet, FESNetConfig


def test_round_trip_keeps_weights_and_meta(tmp_path) -> None:
    net = FESNet(FESNetConfig.tiny())
    path = checkpoint.save(tmp_path / "m.pt", net, {"merger": {"on_threshold": 0.4}})
    ck = checkpoint.load(path, expect=FESNetConfig.tiny())
    assert ck.config == FESNetConfig.tiny()
    assert ck.merger == {"on_threshold": 0.4}
    for (k, a), (_, b) in zip(net.state_dict().items(), ck.net.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_checkpoint_of_another_config_is_refused(tmp_path) -> None:
    path = checkpoint.save(tmp_path / "m.pt", FESNet(FESNetConfig.tiny()))
    with pytest.raises(CheckpointError, match="another model config"):
        checkpoint.load(path, expect=FESNetConfig.small())


def test_weights_not_matching_their_json(tmp_path) -> None:
    path = checkpoint.save(tmp_path / "m.pt", FESNet(FESNetConfig.tiny()))
    doc = json.loads(path.with_suffix(".json").read_text())
    doc["model"]["mtam_channels"] = 32
    path.with_suffix(".json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="do not fit"):
        checkpoint.load(path)


def test_missing_corrupt_and_foreign_preprocessing(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint.load(tmp_path / "nope.pt")
    path = checkpoint.save(tmp_path / "m.pt", FESNet(FESNetConfig.tiny()))
    doc = json.loads(path.with_suffix(".json").read_text())
    doc["preprocessing"]["crop_size"] = 224
    path.with_suffix(".json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="preprocessing"):
        checkpoint.load(path)
    bad = checkpoint.save(tmp_path / "c.pt", FESNet(FESNetConfig.tiny()))
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot read"):
        checkpoint.load(bad)


def test_update_meta_replaces_settings_but_never_what_describes_the_weights(tmp_path) -> None:
    path = checkpoint.save(tmp_path / "m.pt", FESNet(FESNetConfig.tiny()), {"merger": {"a": 1}})
    checkpoint.update_meta(path, merger={"on_threshold": 0.7}, neutral_reference={"p_expr": 0.5})
    ck = checkpoint.load(path)
    assert ck.merger == {"on_threshold": 0.7}
    assert ck.meta["neutral_reference"] == {"p_expr": 0.5}
    checkpoint.update_meta(path, neutral_reference=None)
    assert "neutral_reference" not in checkpoint.read_meta(path)
    with pytest.raises(CheckpointError, match="describes the weights"):
        checkpoint.update_meta(path, model={})
