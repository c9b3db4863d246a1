"""The reproducibility report of a run, checked against Renard et al. (2020).

Pure: it reads nothing itself. :func:`build_report` takes what a run directory records (the
resolved spec, the manifest, metrics, the repeats summary) and returns a :class:`Report`: the
checklist of the paper's recommendations for describing a segmentation experiment (dataset,
split, preprocessing and augmentation, optimizer and every hyperparameter, number of runs,
hardware and software, at least three metrics) and a Markdown page that states them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CheckItem:
    """One recommendation and whether the run's records satisfy it."""

    item: str
    ok: bool
    detail: str


@dataclass
class Report:
    checks: list[CheckItem]
    sections: list[tuple[str, list[str]]] = field(default_factory=list)
    #: one line on how the run ended, when it did not finish ("" when it did)
    outcome: str = ""

    @property
    def passed(self) -> int:
        return sum(c.ok for c in self.checks)

    def markdown(self, title: str) -> str:
        lines = [f"# Reproducibility report: {title}", ""]
        if self.outcome:
            lines += [f"**{self.outcome}**", ""]
        lines += [f"Checklist (Renard et al. 2020): {self.passed}/{len(self.checks)} satisfied", "",
                 "| recommendation | | what the run records |", "|---|---|---|"]
        lines += [f"| {c.item} | {'yes' if c.ok else '**no**'} | {c.detail} |" for c in self.checks]
        for heading, body in self.sections:
            lines += ["", f"## {heading}", ""] + body
        return "\n".join(lines) + "\n"


def _split_size(record: dict | None) -> str | None:
    """``48 samples (97 files)``; older manifests recorded only files."""
    if not record:
        return None
    files = record.get("files")
    if record.get("samples") is not None:
        return f"{record['samples']} samples ({files} files)"
    return f"{files} files" if files else None


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def run_outcome(state: dict | None) -> str:
    """How a run ended, in one line, when it did not finish (``state.json``); "" otherwise."""
    if not state or state.get("state") in (None, "finished"):
        return ""
    text = f"This run did not finish: its state is {state.get('state')}"
    where = [f"rank {state['failed_rank']}" if state.get("failed_rank") is not None else "",
             f"on {state['failed_host']}" if state.get("failed_host") else ""]
    where_text = " ".join(w for w in where if w)
    if state.get("failure"):
        text += f" ({where_text + ': ' if where_text else ''}{state['failure']})"
    return text + "; its metrics, if any, are those of an unfinished training."


def build_report(spec: dict, manifest: dict, test_metrics: dict | None = None,
                 train_summary: dict | None = None, repeats: dict | None = None,
                 state: dict | None = None, splits: dict | None = None,
                 per_case: dict | None = None, comparisons: list[dict] | None = None) -> Report:
    """The checklist and the report sections for one run (or a group of repeated runs or of
    folds: ``repeats`` is then ``repeats.json`` or ``folds.json``); ``state`` (``state.json``)
    makes the report say when the run did not finish; ``splits`` (``splits.json``) states a
    case-level split, ``per_case`` the spread of the per-case metrics
    (:func:`~autocnnp.orchestrator.experiment.per_case_spread`), ``comparisons`` the
    ``compare.json`` files of ``autocnnp compare`` with this run as A."""
    hp, data, policy = spec["hyperparameters"], spec["data"], spec["lr_policy"]
    arch = spec["architecture"]
    ranks = spec["parallelism_degree"]
    case_split, splits = splits, manifest.get("data") or {}
    counts = {k: _split_size(v) for k, v in splits.items()}
    checks: list[CheckItem] = []

    arch_text = arch.get("path") or f"built-in {arch.get('name')}"
    params = ", ".join(f"{k}={v}" for k, v in (arch.get("params") or {}).items()) or "defaults"
    checks.append(CheckItem("architecture described", True, f"{arch_text} ({params})"))

    described = bool(splits.get("train"))
    checks.append(CheckItem("dataset described", described,
                            f"{len(data['classes'])} classes ({', '.join(data['classes'])}), format "
                            f"{data['format']}, image size {data.get('image_size') or 'as stored'}; "
                            f"train sha256 {(splits.get('train') or {}).get('sha256', '?')[:12]}..."
                            if described else "no record of the training data"))
    has_valid, has_test = bool(data.get("valid")), bool(data.get("test"))
    split_text = ", ".join(f"{k}: {counts[k]}" for k in ("train", "valid", "test") if counts.get(k))
    if case_split:
        checks.append(CheckItem("train/validation/test allocation stated", True,
                                split_statement(case_split)))
    else:
        checks.append(CheckItem("train/validation/test allocation stated", has_valid and has_test,
                                split_text + ("" if has_valid else "; no validation split: say why")
                                + ("" if has_test else "; no test split")))
    pre = spec.get("preprocessing")
    checks.append(CheckItem("preprocessing and augmentation described", True,
                            "ImgMed: " + ", ".join(f"{k}={v}" for k, v in pre.items() if v is not None)
                            if pre else "none applied by autocnnp (data used as stored)"))
    momentum = f" (momentum {hp['momentum']})" if hp["optimizer"] == "sgd" else ""
    checks.append(CheckItem(
        "optimizer and every hyperparameter given", True,
        f"{hp['optimizer']}{momentum}, loss {hp['loss']}, base lr {hp['lr']:g} x "
        f"{ranks} ranks, batch {hp['minibatch_size']}/rank ({hp['minibatch_size'] * ranks} global), "
        f"epochs {hp['start_epoch']}-{hp['end_epoch']}, lr policy {policy['name']}"))
    runs = (repeats or {}).get("runs") or [None]
    folds = (repeats or {}).get("kind") == "folds"
    checks.append(CheckItem("number of runs given; variance reported", len(runs) >= 3,
                            (f"{len(runs)} folds (k-fold cross-validation, one training each)"
                             if folds else
                             f"{len(runs)} run(s) with seeds {', '.join(map(str, (repeats or {}).get('seeds') or [manifest.get('seed')]))}")
                            + ("" if len(runs) >= 3 else "; set <reproducibility><property name=\"repeats\">3"
                               " or more to report mean, std and a confidence interval")))
    hw = manifest.get("hardware") or {}
    pk = manifest.get("packages") or {}
    checks.append(CheckItem("hardware and software described", bool(hw and pk),
                            f"{hw.get('cpu_model', '?')} x{hw.get('cpu_cores', '?')}, "
                            f"{hw.get('memory_gib', '?')} GiB, GPUs: {', '.join(hw.get('gpus') or ['none'])}; "
                            + (f"PyTorch {pk.get('torch', '?')} (DistributedDataParallel), "
                               if manifest.get("engine") == "torch" else
                               f"TensorFlow {pk.get('tensorflow-cpu') or pk.get('tensorflow', '?')}, "
                               f"Horovod {pk.get('horovod', '?')}, ")
                            + f"{ranks} rank(s)"))
    selected = (test_metrics or {}).get("selected_metrics") or list(((test_metrics or {}).get("means") or {}))
    checks.append(CheckItem("at least three metrics", test_metrics is not None and len(selected) >= 3,
                            ", ".join(selected) if test_metrics else "no test metrics"))
    code = manifest.get("code") or {}
    checks.append(CheckItem("code version and seed recorded", bool(code.get("git_commit")),
                            f"autocnnp {code.get('autocnnp')}, commit {str(code.get('git_commit'))[:12]}"
                            f"{' (uncommitted changes)' if code.get('git_dirty') else ''}, seed "
                            f"{manifest.get('seed')}, deterministic {manifest.get('deterministic')}"))

    sections: list[tuple[str, list[str]]] = []
    if case_split:
        sections.append(("Split", split_section(case_split)))
    if repeats and repeats.get("summary"):
        body = ["| metric | mean | std | 95% CI |", "|---|---|---|---|"]
        body += [f"| {k} | {v['mean']:.4f} | {v['std']:.4f} | [{v['ci_low']:.4f}, {v['ci_high']:.4f}] |"
                 for k, v in repeats["summary"].items()]
        sections.append((f"Test metrics over {len(runs)} {'folds' if folds else 'runs'}", body))
        members = repeats.get("members") or []
        if members:
            metric = "mean_dice_foreground"
            rows = ["| member | test cases | " + metric + " |", "|---|---|---|"]
            rows += [f"| {m['name']} | {m.get('test_cases') if m.get('test_cases') is not None else '-'} | "
                     f"{_fmt((m.get('means') or {}).get(metric))} |" for m in members]
            sections.append(("Per fold" if folds else "Per run", rows))
    elif test_metrics:
        body = ["| metric | value |", "|---|---|"]
        body += [f"| {k} | {_fmt(v)} |" for k, v in (test_metrics.get("means") or {}).items()]
        sections.append(("Test metrics (one run)", body))
    if per_case:
        sections.append(("Per-case spread", [
            f"{per_case['metric']} over {per_case['rows']} case(s) (per_case.csv): median "
            f"{per_case['median']:.4f}, quartiles [{per_case['q1']:.4f}, {per_case['q3']:.4f}], "
            f"range [{per_case['min']:.4f} ({per_case['min_case']}), {per_case['max']:.4f}]"]))
    for record in comparisons or []:
        sections.append((f"Comparison with {record['b']['name']}", comparison_lines(record)))
    if train_summary:
        sections.append(("Training", [f"- {k}: {v}" for k, v in train_summary.items()]))
    return Report(checks, sections, outcome=run_outcome(state))


def split_statement(splits: dict) -> str:
    """One line: how the cases were split (``splits.json``)."""
    how = f"seed {splits.get('seed')}" + (f", stratified by {splits['stratify']}"
                                          if splits.get("stratify") else "")
    n = len(splits.get("cases") or [])
    if splits.get("folds"):
        sizes = ", ".join(str(len(f)) for f in splits["folds"])
        return (f"case-level {len(splits['folds'])}-fold cross-validation over {n} cases of "
                f"{splits.get('cases_folder')} ({how}); fold sizes {sizes}; no case in two folds")
    counts = ", ".join(f"{name} {len((splits.get('splits') or {}).get(name) or [])}"
                       for name in ("train", "valid", "test"))
    fold = f"fold {splits['fold']} of a cross-validation, " if splits.get("fold") else ""
    return (f"case-level split of {n} cases of {splits.get('cases_folder')} ({fold}{how}): "
            f"{counts} cases; the slices of a case never cross a split")


def split_section(splits: dict) -> list[str]:
    """The case ids of each split or fold."""
    lines = [split_statement(splits), ""]
    if splits.get("folds"):
        lines += [f"- fold {i}: {', '.join(f)}" for i, f in enumerate(splits["folds"], start=1)]
    else:
        lines += [f"- {name}: {', '.join(cases) or '(none)'}"
                  for name, cases in (splits.get("splits") or {}).items()]
    return lines


def comparison_lines(record: dict) -> list[str]:
    """A ``compare.json`` as a table."""
    a, b = record["a"], record["b"]
    lines = [f"A = {a['name']} ({a['kind']}, {a['runs']} run(s)), B = {b['name']} ({b['kind']}, "
             f"{b['runs']} run(s))", "",
             "| metric | A | B | A - B | 95% CI | paired p | verdict |", "|---|---|---|---|---|---|---|"]
    for m in record["metrics"]:
        p = f"{m['wilcoxon_p']:.3g}" if m.get("wilcoxon_p") is not None else "-"
        lines.append(f"| {m['metric']} | {m['mean_a']:.4f} | {m['mean_b']:.4f} | "
                     f"{m['difference']:+.4f} | [{m['ci_low']:+.4f}, {m['ci_high']:+.4f}] | {p} | "
                     f"{'significant' if m['significant'] else 'not significant'} |")
    notes = list(dict.fromkeys(n for m in record["metrics"] for n in m.get("notes") or []))
    return lines + [""] + [f"- {n}" for n in notes] if notes else lines
