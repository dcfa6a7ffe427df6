"""Synthetic result rows of a comparison (classification, ``none`` vs ``manifold``), for the
statistics, report and figure tests: NLL clearly lower with mixing, accuracy within the spread."""

from __future__ import annotations

__all__ = ["ACC", "NLL", "rows"]

NLL = {"none": [0.40, 0.35, 0.45], "manifold": [0.30, 0.26, 0.33]}  # manifold clearly lower
ACC = {"none": [0.90, 0.80, 0.85], "manifold": [0.86, 0.84, 0.88]}  # within the spread


def rows(seeds: tuple[int, ...] = (0, 1, 2)) -> list[dict]:
    """Result rows of 2 variants x ``seeds`` as ``compare`` writes them to results.jsonl."""
    out = []
    for v in ("none", "manifold"):
        for s in seeds:
            t = 1.3 if v == "none" else 0.6
            out.append({"recipe": "classification", "variant": v, "seed": s, "run_dir": f"/r/{v}-{s}",
                         "metrics": {"test/nll": NLL[v][s], "test/nll_scaled": NLL[v][s] - 0.05,
                                     "test/acc": ACC[v][s], "temperature": t}, "temperature": t, "wall_s": 1.0})
    return out
