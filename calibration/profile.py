"""Per-person neutral profiles: what a person's resting face scores, and the thresholds it implies.

A profile is a small JSON file recorded by the neutral-baseline phase (``baseline.py``) and reused
by name (``fesnet-spot run --profile NAME``). It stores the *measurement* (statistics of the
committed fused ``p_expr = p_ME + p_MaE`` over the resting slots) and the *rule* that turns it
into merger thresholds, so the same profile adapts whatever base merger config a run uses
(the checkpoint's, or a fitted one):

    rest  = quantile(rest p_expr, q)
    delta = rest + margin - base.on_threshold      (clipped at 0 unless allow_lower)
    on    = base.on_threshold + delta
    off   = max(base.off_threshold + delta, rest)  (and <= on)

With a ``reference`` (the same resting quantile measured on the people the base thresholds were
fitted on: ``fesnet-calibrate fit`` writes it), the rule is relative instead:

    shift = logit(rest) - logit(reference)         (clipped at 0 unless allow_lower)
    on    = sigmoid(logit(base.on_threshold) + shift),  off likewise

The fitted thresholds already allow for how high the population's resting scores sit; the
relative rule moves them only by how far *this* person's rest differs (in logit space, so a
difference near 1 counts as much as one near 0.5). The absolute rule fails when the model rests
above the fitted threshold for everyone: measured with the first shipped checkpoint (resting
median 0.83-0.91), it pushed every threshold to the 0.98 cap and overall F1 fell from 24.7 to 0.

Read the absolute rule as "an interval may open only where this person's score rises clearly above
where it rests, and it ends when the score is back in the resting range". Moving both thresholds by
delta is the same as subtracting a resting bias from p_expr (the merger only compares p_expr with
the two thresholds). The off threshold is also kept at or above the resting quantile: measured on a
stand-in with a high resting score, keeping only the base hysteresis gap left the off threshold
inside the resting range, so intervals did not close at the end of an expression.

Profiles live in a user directory (default ``~/.config/fesnet/profiles``), one ``NAME.json`` each.
Anything wrong with a profile (missing, unreadable, unknown keys, out-of-range values, another
format version) is a :class:`ProfileError` whose message says what to do.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fesnet.model.merger import MergerConfig

FORMAT_VERSION = 1
DEFAULT_PROFILES_DIR = Path.home() / ".config" / "fesnet" / "profiles"
QUANTILES = (0.5, 0.9, 0.95, 0.99, 1.0)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MAX_THRESHOLD = 0.98  # the merger needs on < 1; keep room for scores to reach it
_MIN_THRESHOLD = 0.02


class ProfileError(ValueError):
    """A profile is missing, unreadable or invalid (the message says which and what to do)."""


@dataclass(frozen=True)
class BaselineStats:
    """Committed fused scores of a person's resting face.

    ``quantiles`` maps the strings of :data:`QUANTILES` to the p_expr quantile; ``mean_probs`` is
    the mean (neutral, ME, MaE) probability vector; ``n_slots`` the number of 60 Hz slots.
    """

    n_slots: int
    mean_probs: tuple[float, float, float]
    p_expr_mean: float
    p_expr_std: float
    quantiles: dict[str, float]

    @classmethod
    def from_scores(cls, scores: np.ndarray) -> BaselineStats:
        """Statistics of fused scores (N, 3); N must be > 0 (never calibrate on nothing)."""
        s = np.asarray(scores, np.float64)
        if s.ndim != 2 or s.shape[1] != 3:
            raise ValueError(f"scores must be (N, 3), got {s.shape}")
        if len(s) == 0:
            raise ValueError("no resting scores: a baseline needs at least one slot with a face")
        e = s[:, 1] + s[:, 2]
        q = np.quantile(e, QUANTILES)
        return cls(
            n_slots=len(s),
            mean_probs=tuple(float(x) for x in s.mean(axis=0)),  # type: ignore[arg-type]
            p_expr_mean=float(e.mean()),
            p_expr_std=float(e.std()),
            quantiles={str(k): float(v) for k, v in zip(QUANTILES, q, strict=True)},
        )

    def quantile(self, q: float) -> float:
        """p_expr at quantile ``q`` (interpolated between the stored ones)."""
        xs = np.array(QUANTILES)
        ys = np.array([self.quantiles[str(k)] for k in QUANTILES])
        return float(np.interp(q, xs, ys))


@dataclass(frozen=True)
class ThresholdRule:
    """How resting statistics move the merger thresholds (see the module docstring)."""

    quantile: float = 0.99
    margin: float = 0.05
    allow_lower: bool = False
    """False: a profile can only make the spotter stricter than the base config (a clean resting
    face keeps the fitted thresholds). True: it also lowers them for a very quiet resting face."""

    reference: float | None = None
    """p_expr at ``quantile`` on the resting faces of the population the base thresholds were
    fitted on. Set: the relative rule (module docstring); ``margin`` is then unused."""

    def __post_init__(self) -> None:
        if self.reference is not None and not 0.0 < self.reference < 1.0:
            raise ProfileError(f"rule.reference must be in (0, 1), got {self.reference}")
        if not 0.5 <= self.quantile <= 1.0:
            raise ProfileError(f"rule.quantile must be in [0.5, 1], got {self.quantile}")
        if not -0.5 <= self.margin <= 0.5:
            raise ProfileError(f"rule.margin must be in [-0.5, 0.5], got {self.margin}")


@dataclass(frozen=True)
class NeutralProfile:
    """One person's neutral baseline and the rule that adapts thresholds to it."""

    name: str
    stats: BaselineStats
    rule: ThresholdRule = field(default_factory=ThresholdRule)
    created: str = ""
    source: str = ""
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        check_name(self.name)

    def delta(self, base: MergerConfig) -> float:
        """How far the thresholds move for this person (>= 0 unless ``rule.allow_lower``): in
        probability for the absolute rule, in logit space for the relative one."""
        rest = self.stats.quantile(self.rule.quantile)
        if self.rule.reference is not None:
            d = _logit(rest) - _logit(self.rule.reference)
        else:
            d = rest + self.rule.margin - base.on_threshold
        return d if self.rule.allow_lower else max(d, 0.0)

    def apply(self, base: MergerConfig) -> MergerConfig:
        """``base`` with on/off thresholds moved by :meth:`delta`, clipped to a valid range."""
        d = self.delta(base)
        if self.rule.reference is not None:
            on = _sigmoid(_logit(base.on_threshold) + d)
            off = _sigmoid(_logit(base.off_threshold) + d)
        else:
            on = base.on_threshold + d
            off = max(base.off_threshold + d, self.stats.quantile(self.rule.quantile))
        on = min(max(on, _MIN_THRESHOLD), _MAX_THRESHOLD)
        off = min(max(off, _MIN_THRESHOLD / 2), on)
        return replace(base, on_threshold=float(on), off_threshold=float(off))

    # -- JSON ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "profile") -> NeutralProfile:
        if not isinstance(data, dict):
            raise ProfileError(f"{where}: a profile is a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ProfileError(
                f"{where}: format_version {version!r}, this code reads {FORMAT_VERSION} "
                "(record the profile again)"
            )
        _check_keys(data, cls, where)
        try:
            stats_d = data["stats"]
            _check_keys(stats_d, BaselineStats, f"{where}: stats")
            quantiles = {str(k): _num(v, f"stats.quantiles[{k}]") for k, v in
                         dict(stats_d["quantiles"]).items()}
            if sorted(quantiles) != sorted(str(q) for q in QUANTILES):
                raise ProfileError(f"stats.quantiles must have keys {[str(q) for q in QUANTILES]}")
            qs = [quantiles[str(q)] for q in QUANTILES]
            if any(not 0.0 <= v <= 1.0 for v in qs) or qs != sorted(qs):
                raise ProfileError(f"stats.quantiles must be non-decreasing in [0, 1], got {qs}")
            mean_probs = tuple(_num(v, "stats.mean_probs") for v in stats_d["mean_probs"])
            if len(mean_probs) != 3:
                raise ProfileError("stats.mean_probs must have 3 values (neutral, ME, MaE)")
            n_slots = stats_d["n_slots"]
            if not isinstance(n_slots, int) or isinstance(n_slots, bool) or n_slots < 1:
                raise ProfileError(f"stats.n_slots must be a positive int, got {n_slots!r}")
            stats = BaselineStats(
                n_slots=n_slots,
                mean_probs=mean_probs,  # type: ignore[arg-type]
                p_expr_mean=_num(stats_d["p_expr_mean"], "stats.p_expr_mean"),
                p_expr_std=_num(stats_d["p_expr_std"], "stats.p_expr_std"),
                quantiles=quantiles,
            )
            rule_d = data.get("rule", {})
            _check_keys(rule_d, ThresholdRule, f"{where}: rule")
            allow_lower = rule_d.get("allow_lower", False)
            if not isinstance(allow_lower, bool):
                raise ProfileError(f"rule.allow_lower must be true or false, got {allow_lower!r}")
            reference = rule_d.get("reference")
            rule = ThresholdRule(
                quantile=_num(rule_d.get("quantile", 0.99), "rule.quantile"),
                margin=_num(rule_d.get("margin", 0.05), "rule.margin"),
                allow_lower=allow_lower,
                reference=None if reference is None else _num(reference, "rule.reference"),
            )
            return cls(
                name=str(data["name"]),
                stats=stats,
                rule=rule,
                created=str(data.get("created", "")),
                source=str(data.get("source", "")),
            )
        except ProfileError as e:
            msg = str(e)
            raise ProfileError(msg if msg.startswith(where) else f"{where}: {msg}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise ProfileError(f"{where}: malformed profile ({type(e).__name__}: {e})") from None


def checkpoint_rule(meta: dict[str, Any], quantile: float = 0.5) -> ThresholdRule | None:
    """The relative rule a checkpoint's ``neutral_reference`` implies (``fesnet-calibrate fit``
    measures it), or None (then the absolute rule applies) if it has none for ``quantile``.
    The default compares medians: a 3 s resting clip's q99 is set by its one blink or head
    movement, not by the face (docs/CALIBRATION.md, measured)."""
    ref = meta.get("neutral_reference")
    levels = ref.get("p_expr") if isinstance(ref, dict) else None
    p = levels.get(str(quantile)) if isinstance(levels, dict) else None
    if not isinstance(p, (int, float)) or not 0.0 < p < 1.0:
        return None
    return ThresholdRule(quantile=quantile, allow_lower=True, reference=float(p))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _check_keys(data: Any, cls: type, where: str) -> None:
    if not isinstance(data, dict):
        raise ProfileError(f"{where} must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise ProfileError(f"{where}: unknown keys {unknown}")


def _num(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProfileError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def check_name(name: str) -> str:
    """Profile names become file names: letters, digits, '_', '.', '-' (max 64, no path)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ProfileError(
            f"invalid profile name {name!r}: use letters, digits, '_', '.' or '-' "
            "(at most 64 characters, starting with a letter or digit)"
        )
    return name


def profiles_dir(override: str | Path | None = None) -> Path:
    return Path(override).expanduser() if override is not None else DEFAULT_PROFILES_DIR


def profile_path(name: str, directory: str | Path | None = None) -> Path:
    return profiles_dir(directory) / f"{check_name(name)}.json"


def list_profiles(directory: str | Path | None = None) -> list[str]:
    d = profiles_dir(directory)
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []


def save_profile(profile: NeutralProfile, directory: str | Path | None = None) -> Path:
    """Write ``NAME.json`` atomically (a reader never sees half a profile)."""
    path = profile_path(profile.name, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(profile.to_dict(), indent=2) + "\n")
    tmp.replace(path)
    return path


def load_profile(name_or_path: str | Path, directory: str | Path | None = None) -> NeutralProfile:
    """Load a profile by name (from ``directory``) or by a path ending in ``.json``."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".json":
        path = candidate.expanduser()
    else:
        path = profile_path(str(name_or_path), directory)
    if not path.is_file():
        have = list_profiles(directory)
        known = f"saved profiles: {', '.join(have)}" if have else "no profiles are saved there"
        raise ProfileError(
            f"profile {str(name_or_path)!r} not found at {path} ({known}); record one with "
            "`fesnet-spot run --calibrate --profile NAME` or "
            "`fesnet-calibrate baseline --name NAME`"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProfileError(f"profile {path} is not readable JSON: {e}") from None
    return NeutralProfile.from_dict(data, where=f"profile {path}")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
