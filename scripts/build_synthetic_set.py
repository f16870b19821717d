"""Render and align the videos of a synthetic set into the aligned-crop cache, in parallel, so a
training run starts from cache hits. Videos already cached are skipped; the set's job list, and
so every video id, is a pure function of the set and its seed.

Usage:
    python scripts/build_synthetic_set.py --set v2 --workers 2            # train and val
    python scripts/build_synthetic_set.py --set v2 --splits val --workers 1
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from fesnet.model.datasets import SYNTHETIC_SETS, SyntheticSetConfig, cache_synthetic_split


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", dest="synthetic_set", default="v2", choices=SYNTHETIC_SETS)
    p.add_argument("--splits", nargs="+", default=["train", "val"],
                   choices=["train", "val", "test"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="processes (one core each)")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/aligned"))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = SyntheticSetConfig.preset(a.synthetic_set, a.seed)
    for split in a.splits:
        start = time.perf_counter()
        jobs = cache_synthetic_split(split, a.cache_dir, cfg, workers=a.workers)
        seconds = sum(spec.duration_s for _, spec, _ in jobs)
        print(f"{a.synthetic_set} {split}: {len(jobs)} videos, {seconds / 60:.0f} min of video "
              f"cached in {a.cache_dir}, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
