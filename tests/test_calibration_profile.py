"""Neutral profiles: format round trip, threshold rule, bad and missing profiles, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fesnet.calibration.profile import (
    BaselineStats,
    NeutralProfile,
    ProfileError,
    ThresholdRule,
    list_profiles,
    load_profile,
    save_profile,
)
from fesnet.model.merger import MergerConfig


def profile(name: str = "alice", rest: float = 0.4, rule: ThresholdRule | None = None):
    scores = np.zeros((300, 3), np.float32)
    e = np.linspace(rest - 0.05, rest + 0.05, 300)
    scores[:, 1] = e / 2
    scores[:, 2] = e / 2
    scores[:, 0] = 1 - e
    return NeutralProfile(name, BaselineStats.from_scores(scores), rule or ThresholdRule())


def test_round_trip_and_listing(tmp_path: Path) -> None:
    p = profile()
    path = save_profile(p, tmp_path)
    assert path == tmp_path / "alice.json"
    assert load_profile("alice", tmp_path) == p
    assert load_profile(path) == p  # a path works too
    assert list_profiles(tmp_path) == ["alice"]
    doc = json.loads(path.read_text())
    assert doc["format_version"] == 1 and doc["stats"]["n_slots"] == 300


def test_rule_raises_thresholds_above_the_resting_scores() -> None:
    base = MergerConfig(on_threshold=0.5, off_threshold=0.3)
    p = profile(rest=0.45)
    cfg = p.apply(base)
    q99 = p.stats.quantile(0.99)
    assert cfg.on_threshold == pytest.approx(q99 + 0.05)
    # The interval ends once the score is back in the resting range (not below it).
    assert cfg.off_threshold == pytest.approx(q99)
    # A resting face just under the base on-threshold keeps it, but still raises off.
    slightly = profile(rest=0.4)
    assert slightly.apply(base).on_threshold == 0.5
    assert slightly.apply(base).off_threshold == pytest.approx(slightly.stats.quantile(0.99))
    # A quiet resting face keeps the base thresholds unless lowering is allowed.
    quiet = profile(rest=0.08)
    assert quiet.apply(base) == base
    lowered = profile(rest=0.08, rule=ThresholdRule(allow_lower=True)).apply(base)
    assert lowered.on_threshold < 0.5
    # A face resting near 1 still gives a valid config (clipped below 1).
    assert profile(rest=0.97).apply(base).on_threshold < 1.0


def test_relative_rule_moves_thresholds_by_the_difference_from_the_reference() -> None:
    """Hand-computed in logit space: a person resting exactly at the reference keeps the fitted
    thresholds; one resting higher gets both raised by logit(rest) - logit(reference), one
    resting lower gets both lowered; the rule survives a JSON round trip."""
    base = MergerConfig(on_threshold=0.9, off_threshold=0.72)
    same = profile(rest=0.8)
    ref = same.stats.quantile(0.99)
    rule = ThresholdRule(quantile=0.99, allow_lower=True, reference=ref)

    def logit(x: float) -> float:
        return float(np.log(x / (1 - x)))

    def sigmoid(x: float) -> float:
        return float(1 / (1 + np.exp(-x)))

    kept = profile(rest=0.8, rule=rule).apply(base)
    assert (kept.on_threshold, kept.off_threshold) == pytest.approx((0.9, 0.72))
    for rest in (0.6, 0.85):
        p = profile(rest=rest, rule=rule)
        shift = logit(p.stats.quantile(0.99)) - logit(ref)
        cfg = p.apply(base)
        assert cfg.on_threshold == pytest.approx(sigmoid(logit(0.9) + shift))
        assert cfg.off_threshold == pytest.approx(sigmoid(logit(0.72) + shift))
        assert (cfg.on_threshold > 0.9) == (rest > 0.8)
    raise_only = ThresholdRule(quantile=0.99, reference=ref)  # allow_lower False
    kept = profile(rest=0.6, rule=raise_only).apply(base)
    assert (kept.on_threshold, kept.off_threshold) == pytest.approx((0.9, 0.72))
    p = profile(rest=0.6, rule=rule)
    assert NeutralProfile.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    with pytest.raises(ProfileError, match="reference must be in"):
        ThresholdRule(reference=1.0)


def test_checkpoint_reference_gives_the_relative_rule() -> None:
    from fesnet.calibration.profile import checkpoint_rule

    meta = {"neutral_reference": {"p_expr": {"0.5": 0.2, "0.99": 0.7}}}
    assert checkpoint_rule(meta) == ThresholdRule(quantile=0.5, allow_lower=True, reference=0.2)
    assert checkpoint_rule(meta, 0.99) == ThresholdRule(0.99, allow_lower=True, reference=0.7)
    assert checkpoint_rule({}) is None
    assert checkpoint_rule(meta, 0.95) is None
    assert checkpoint_rule({"neutral_reference": {"p_expr": {"0.5": 1.5}}}) is None


def test_missing_profile_names_the_saved_ones(tmp_path: Path) -> None:
    save_profile(profile("bob"), tmp_path)
    with pytest.raises(ProfileError, match=r"'alice' not found.*bob.*--calibrate"):
        load_profile("alice", tmp_path)
    with pytest.raises(ProfileError, match="no profiles are saved"):
        load_profile("alice", tmp_path / "empty")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(format_version=99), "format_version 99"),
        (lambda d: d.update(colour="red"), r"unknown keys \['colour'\]"),
        (lambda d: d["stats"].update(n_slots=0), "n_slots must be a positive int"),
        (lambda d: d["stats"]["quantiles"].update({"0.99": float("nan")}), "finite number"),
        (lambda d: d["stats"]["quantiles"].update({"0.5": 0.9}), "non-decreasing"),
        (lambda d: d["stats"].pop("mean_probs"), "malformed profile"),
        (lambda d: d["rule"].update(quantile=3), "rule.quantile"),
        (lambda d: d["rule"].update(allow_lower="yes"), "allow_lower must be true or false"),
        (lambda d: d.update(name="../etc/passwd"), "invalid profile name"),
    ],
)
def test_bad_profiles_are_clear_errors(tmp_path: Path, mutate, message: str) -> None:
    doc = profile().to_dict()
    mutate(doc)
    (tmp_path / "alice.json").write_text(json.dumps(doc))
    with pytest.raises(ProfileError, match=message):
        load_profile("alice", tmp_path)


def test_unreadable_profile_and_bad_names(tmp_path: Path) -> None:
    (tmp_path / "alice.json").write_text("{not json")
    with pytest.raises(ProfileError, match="not readable JSON"):
        load_profile("alice", tmp_path)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ProfileError, match="JSON object"):
        load_profile("list", tmp_path)
    for bad in ("", "a/b", ".hidden", "x" * 65):
        with pytest.raises(ProfileError, match="invalid profile name"):
            load_profile(bad, tmp_path)


def test_stats_refuse_an_empty_baseline() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        BaselineStats.from_scores(np.zeros((0, 3)))


def test_spot_cli_reports_a_missing_or_bad_profile(tmp_path: Path, capsys) -> None:
    from fesnet.realtime import cli

    ckpt = tmp_path / "tiny.pt"
    _tiny_checkpoint(ckpt)
    args = ["run", "--checkpoint", str(ckpt), "--backend", "torch", "--profiles-dir",
            str(tmp_path / "profiles"), "--profile", "nobody", "--quiet"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "profile 'nobody' not found" in err and "--calibrate" in err
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "nobody.json").write_text('{"format_version": 1}')
    assert cli.main(args) == 2
    assert "malformed profile" in capsys.readouterr().err


def _tiny_checkpoint(path: Path) -> Path:
    import torch

    from fesnet.model import checkpoint
    from fesnet.model.fesnet import FESNet, FESNetConfig

    torch.manual_seed(0)
    return checkpoint.save(path, FESNet(FESNetConfig.tiny()))
