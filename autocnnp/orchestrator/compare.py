"""``autocnnp compare A B``: is the difference between two methods more than noise?

A side is one run, a group of repeats or a k-fold group (:func:`load_side`). For each metric
the difference of the sides' means (A - B) gets a confidence interval that accounts for both
sources of noise (Bosma et al.: one run per method declared false differences in 15% of
comparisons):

* training noise: the run-to-run variance of each side's run means, ``s_A^2/R_A +
  s_B^2/R_B`` (repeats). A side with one run borrows the other side's variance (the same
  recipe is assumed to vary as much); with one run on both sides it is unknown, and the result
  says so. The folds of a CV group see different cases, so their spread mixes both sources and
  is not added: each case's value comes from a model that did not see it, and the case term
  below carries the fold-to-fold training noise;
* case sampling: with the same cases on both sides (the same test split or the same folds),
  the variance of the per-case differences over ``n`` (paired); otherwise each side's variance
  of its per-case values over its cases.

The terms add; the degrees of freedom come from Welch-Satterthwaite, the interval from
Student's t. The difference is called significant when the 95% interval excludes 0. Where
the sides share their cases, a paired Wilcoxon signed-rank test over the cases is reported
too: it is the right test over cases, but it treats the trained models as fixed, so alone it
would mistake training noise for a difference.

Pure statistics (:func:`compare_sides`) apart from :func:`load_side`, which reads the run
directories, and :func:`write_outputs`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from autocnnp.engine import rundir
from autocnnp.errors import AutocnnpError

#: compared by default, in the design's order (Dice, then mean accuracy, then mean IoU)
DEFAULT_METRICS = ("mean_dice_foreground", "mean_accuracy", "mean_iou")
ONE_RUN_WARNING = ("one run per method cannot separate the methods from training noise; the "
                   "measured run-to-run sd here is {sd}")


@dataclass
class Side:
    """One side of a comparison: its runs' test means and per-case values."""

    name: str
    kind: str  # run, repeats or folds
    runs: list[dict[str, float]]
    #: per run: case -> {metric: value}
    cases: list[dict[str, dict[str, float]]] = field(default_factory=list)

    def run_values(self, metric: str) -> list[float]:
        return [r[metric] for r in self.runs if _finite(r.get(metric))]

    def case_values(self, metric: str) -> dict[str, float]:
        """Each case's value, averaged over the runs that scored it."""
        pooled: dict[str, list[float]] = {}
        for run in self.cases:
            for case, values in run.items():
                if _finite(values.get(metric)):
                    pooled.setdefault(case, []).append(values[metric])
        return {case: sum(v) / len(v) for case, v in pooled.items()}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _var(xs: Sequence[float]) -> float:
    n = len(xs)
    mean = sum(xs) / n
    return sum((x - mean) ** 2 for x in xs) / (n - 1)


@dataclass
class MetricComparison:
    """The comparison of one metric (A - B)."""

    metric: str
    mean_a: float
    mean_b: float
    difference: float
    ci_low: float
    ci_high: float
    df: float | None
    significant: bool
    training_sd_a: float | None
    training_sd_b: float | None
    cases: int
    paired: bool
    wilcoxon_p: float | None
    notes: list[str] = field(default_factory=list)


def compare_metric(a: Side, b: Side, metric: str, confidence: float = 0.95) -> MetricComparison:
    """See the module docstring."""
    from scipy import stats

    ra, rb = a.run_values(metric), b.run_values(metric)
    if not ra or not rb:
        raise AutocnnpError(f"no {metric} on side {a.name if not ra else b.name}")
    mean_a, mean_b = sum(ra) / len(ra), sum(rb) / len(rb)
    notes: list[str] = []
    terms: list[tuple[float, float]] = []  # (variance, degrees of freedom)

    def spread(side: Side, runs: list[float]) -> float | None:
        return math.sqrt(_var(runs)) if side.kind != "folds" and len(runs) > 1 else None

    sd_a, sd_b = spread(a, ra), spread(b, rb)
    for side, runs, own, other in ((a, ra, sd_a, sd_b), (b, rb, sd_b, sd_a)):
        if side.kind == "folds":
            continue
        if own is not None:
            terms.append((own ** 2 / len(runs), len(runs) - 1))
        elif other is not None:
            other_runs = len(rb if side is a else ra)
            terms.append((other ** 2 / len(runs), other_runs - 1))
            notes.append(f"{side.name} has one run: its training noise is taken to be the other "
                         f"side's (sd {other:.4f})")
    one_run = [s for s, r in ((a, ra), (b, rb)) if s.kind != "folds" and len(r) == 1]
    if one_run:
        measured = sd_a if sd_a is not None else sd_b
        notes.insert(0, ONE_RUN_WARNING.format(
            sd=f"{measured:.4f}" if measured is not None else
            "unknown: neither side has repeated runs (set <reproducibility><property "
            "name=\"repeats\">3</property> or more)"))
    ca, cb = a.case_values(metric), b.case_values(metric)
    paired = bool(ca) and set(ca) == set(cb)
    wilcoxon_p = None
    n_cases = len(ca) if paired else len(ca) + len(cb)
    if paired and len(ca) > 1:
        deltas = [ca[c] - cb[c] for c in sorted(ca)]
        terms.append((_var(deltas) / len(deltas), len(deltas) - 1))
        if any(d != 0 for d in deltas):
            wilcoxon_p = float(stats.wilcoxon(deltas).pvalue)
    elif len(ca) > 1 and len(cb) > 1:
        terms.append((_var(list(ca.values())) / len(ca), len(ca) - 1))
        terms.append((_var(list(cb.values())) / len(cb), len(cb) - 1))
        notes.append("the sides scored different cases: unpaired over cases")
    variance = sum(v for v, _ in terms)
    difference = mean_a - mean_b
    if variance > 0:
        df = variance ** 2 / sum(v ** 2 / d for v, d in terms if d > 0 and v > 0)
        half = float(stats.t.ppf((1 + confidence) / 2, df)) * math.sqrt(variance)
    else:
        df, half = None, 0.0
        notes.append("no variance could be measured: no interval")
    low, high = difference - half, difference + half
    return MetricComparison(metric, mean_a, mean_b, difference, low, high, df,
                            significant=variance > 0 and (low > 0 or high < 0),
                            training_sd_a=sd_a, training_sd_b=sd_b, cases=n_cases,
                            paired=paired, wilcoxon_p=wilcoxon_p, notes=notes)


def compare_sides(a: Side, b: Side, metrics: Sequence[str] = DEFAULT_METRICS
                  ) -> list[MetricComparison]:
    return [compare_metric(a, b, m) for m in metrics]


# --- reading the sides -----------------------------------------------------------------------

def _per_case(run_dir: Path) -> dict[str, dict[str, float]]:
    from autocnnp.orchestrator.experiment import read_per_case

    path = run_dir / rundir.PER_CASE_FILE
    if not path.exists():
        return {}
    return {row["case"]: {k: v for k, v in row.items() if isinstance(v, float)}
            for row in read_per_case(path)}


def load_side(path: Path) -> Side:
    """A run directory or a group (``group.json``) as a :class:`Side`; an AutocnnpError
    names what is missing."""
    path = Path(path)
    group_file = path / rundir.GROUP_FILE
    if group_file.is_file():
        info = rundir.read_json(group_file)
        members = [path / name for name in info["members"]]
        kind = info.get("kind", "repeats")
    elif (path / rundir.SPEC_FILE).is_file():
        members, kind = [path], "run"
    else:
        raise AutocnnpError(f"{path}: neither a run directory nor a group of runs",
                            remedy="give two run directories, repeat groups or CV groups")
    runs, cases = [], []
    for member in members:
        metrics = rundir.read_test_metrics(member)
        if metrics is None:
            raise AutocnnpError(f"{member}: no test metrics (the run did not finish, or its "
                                f"config has no test split)")
        runs.append(metrics.get("means") or {})
        cases.append(_per_case(member))
    return Side(path.name, kind, runs, cases)


# --- output ----------------------------------------------------------------------------------

def table(a: Side, b: Side, results: list[MetricComparison]) -> str:
    """The comparison as a text table, one line per metric, notes below."""
    lines = [f"A = {a.name} ({a.kind}, {len(a.runs)} run(s)); B = {b.name} ({b.kind}, "
             f"{len(b.runs)} run(s))",
             f"{'metric':<22} {'A':>8} {'B':>8} {'A-B':>8} {'95% CI':>20}  {'paired p':>9}  verdict"]
    for r in results:
        p = f"{r.wilcoxon_p:.3g}" if r.wilcoxon_p is not None else "-"
        verdict = "significant" if r.significant else "not significant"
        lines.append(f"{r.metric:<22} {r.mean_a:>8.4f} {r.mean_b:>8.4f} {r.difference:>+8.4f} "
                     f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]  {p:>9}  {verdict}")
    notes = list(dict.fromkeys(n for r in results for n in r.notes))
    if results and results[0].wilcoxon_p is not None:
        notes.append("paired p: Wilcoxon signed-rank over the cases; it holds the trained models "
                     "fixed, so the verdict rests on the interval, which adds training noise")
    return "\n".join(lines + [f"note: {n}" for n in notes])


def svg_plot(a: Side, b: Side, results: list[MetricComparison]) -> str:
    """A forest plot (difference and 95% CI per metric, zero marked) as SVG text."""
    width, row, left, right = 640, 40, 190, 40
    height = 60 + row * len(results)
    span = max([abs(v) for r in results for v in (r.ci_low, r.ci_high, r.difference)] + [1e-6])
    scale = (width - left - right) / (2 * span)

    def x(value: float) -> float:
        return left + (value + span) * scale

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">',
             f'<text x="10" y="18">{_esc(a.name)} minus {_esc(b.name)} (95% CI)</text>',
             f'<line x1="{x(0):.1f}" y1="28" x2="{x(0):.1f}" y2="{height - 12}" stroke="#888" '
             f'stroke-dasharray="4 3"/>',
             f'<text x="{x(-span):.1f}" y="{height - 2}">{-span:+.3f}</text>',
             f'<text x="{x(span) - 40:.1f}" y="{height - 2}">{span:+.3f}</text>']
    for i, r in enumerate(results):
        y = 50 + i * row
        colour = "#c0392b" if r.significant else "#2c3e50"
        parts += [f'<text x="10" y="{y + 4}">{_esc(r.metric)}</text>',
                  f'<line x1="{x(r.ci_low):.1f}" y1="{y}" x2="{x(r.ci_high):.1f}" y2="{y}" '
                  f'stroke="{colour}" stroke-width="2"/>',
                  f'<circle cx="{x(r.difference):.1f}" cy="{y}" r="4" fill="{colour}"/>']
    return "\n".join(parts + ["</svg>"]) + "\n"


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_outputs(a: Side, b: Side, results: list[MetricComparison], out: Path) -> dict[str, Path]:
    """``compare.json``, ``compare.svg`` and ``compare.txt`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    record = {"a": {"name": a.name, "kind": a.kind, "runs": len(a.runs)},
              "b": {"name": b.name, "kind": b.kind, "runs": len(b.runs)},
              "metrics": [asdict(r) for r in results]}
    files = {"json": out / "compare.json", "plot": out / "compare.svg", "table": out / "compare.txt"}
    rundir.atomic_write(files["json"], (json.dumps(record, indent=2) + "\n").encode())
    rundir.atomic_write(files["plot"], svg_plot(a, b, results).encode())
    rundir.atomic_write(files["table"], (table(a, b, results) + "\n").encode())
    return files
