"""The reproducibility report's checklist (Renard et al. 2020) from a run's records."""

from __future__ import annotations

from pathlib import Path

from autocnnp.orchestrator.report import build_report
from autocnnp.engine.spec import spec_to_dict
from autocnnp.generator.assembly import load_checked_spec

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = {"seed": 42, "deterministic": False,
            "data": {"train": {"files": 180, "sha256": "ab" * 32}, "valid": {"files": 60, "sha256": "cd" * 32},
                     "test": {"files": 60, "sha256": "ef" * 32}},
            "hardware": {"cpu_model": "CPU", "cpu_cores": 2, "memory_gib": 24, "gpus": ["none"]},
            "packages": {"tensorflow-cpu": "2.15.1", "horovod": "0.28.1"},
            "code": {"autocnnp": "0.1.0", "git_commit": "0123456789abcdef", "git_dirty": False}}
METRICS = {"means": {"mean_dice": 0.9, "mean_sensitivity": 0.9, "mean_iou": 0.8},
           "selected_metrics": ["dice", "sensitivity", "mean_iou"]}


def checks(report):
    return {c.item: c.ok for c in report.checks}


def test_single_run_is_flagged_and_the_rest_passes():
    spec = spec_to_dict(load_checked_spec(ROOT / "configs" / "quickstart.xml"))
    report = build_report(spec, MANIFEST, METRICS)
    assert checks(report) == {
        "architecture described": True, "dataset described": True,
        "train/validation/test allocation stated": True,
        "preprocessing and augmentation described": True,
        "optimizer and every hyperparameter given": True,
        "number of runs given; variance reported": False,
        "hardware and software described": True, "at least three metrics": True,
        "code version and seed recorded": True}
    page = report.markdown("q")
    assert "Checklist (Renard et al. 2020): 8/9 satisfied" in page
    assert "adam, loss dice_crossentropy, base lr 0.001 x 2 ranks, batch 8/rank (16 global)" in page


def test_repeats_no_validation_split_and_two_metrics():
    spec = spec_to_dict(load_checked_spec(ROOT / "configs" / "quickstart.xml"))
    spec["data"]["valid"] = None
    repeats = {"runs": ["a", "b", "c"], "seeds": [1, 2, 3],
               "summary": {"mean_dice": {"mean": 0.9, "std": 0.01, "ci_low": 0.88, "ci_high": 0.92}}}
    report = build_report(spec, MANIFEST, {"means": {}, "selected_metrics": ["dice", "hd95"]}, None, repeats)
    result = checks(report)
    assert result["number of runs given; variance reported"] is True
    assert result["train/validation/test allocation stated"] is False
    assert result["at least three metrics"] is False
    assert "| mean_dice | 0.9000 | 0.0100 | [0.8800, 0.9200] |" in report.markdown("g")


def test_splits_are_counted_in_samples_and_a_failed_run_says_so():
    spec = spec_to_dict(load_checked_spec(ROOT / "configs" / "quickstart.xml"))
    manifest = dict(MANIFEST, data={
        "train": {"files": 97, "samples": 48, "sha256": "ab" * 32},
        "valid": {"files": 25, "samples": 12, "sha256": "cd" * 32},
        "test": {"files": 60, "sha256": "ef" * 32}})  # an older manifest: files only
    state = {"state": "failed", "failed_rank": 1, "failed_host": "node2",
             "failure": "loss is NaN at epoch 3 step 7"}
    page = build_report(spec, manifest, METRICS, state=state).markdown("q")
    assert ("| train/validation/test allocation stated | yes | train: 48 samples (97 files), "
            "valid: 12 samples (25 files), test: 60 files |") in page
    assert page.splitlines()[2] == (
        "**This run did not finish: its state is failed (rank 1 on node2: loss is NaN at "
        "epoch 3 step 7); its metrics, if any, are those of an unfinished training.**")
    finished = build_report(spec, manifest, METRICS, state={"state": "finished"}).markdown("q")
    assert "did not finish" not in finished


def test_the_manifest_counts_samples_not_files(tmp_path):
    from autocnnp.components.demo_data import build_demo_dataset
    from autocnnp.run_manage.records import describe_split

    data = tmp_path / "mni"
    build_demo_dataset(data, size=32, n_slices=20)
    (data / "train" / ".keep").write_text("")
    spec = load_checked_spec(ROOT / "configs" / "quickstart.xml")
    spec = spec.replace(data=spec.data.__class__(**{**spec.data.__dict__, "train": data / "train",
                                                    "image_size": None}))
    record = describe_split(spec, "train")
    assert record["samples"] == 12
    assert record["files"] == 2 * 12 + 1  # images, masks and the .keep


def test_split_folds_per_case_and_comparison_are_reported():
    spec = spec_to_dict(load_checked_spec(ROOT / "configs" / "crossval.xml"))
    splits = {"cases_folder": "/d/Task90", "seed": 0, "stratify": "site",
              "cases": ["c1", "c2", "c3", "c4", "c5", "c6"],
              "folds": [["c1", "c4"], ["c2", "c5"], ["c3", "c6"]]}
    folds = {"kind": "folds", "runs": ["f1", "f2", "f3"], "seeds": [42, 42, 42],
             "summary": {"mean_dice_foreground": {"mean": 0.8, "std": 0.05, "ci_low": 0.68,
                                                  "ci_high": 0.92, "runs": 3}},
             "members": [{"name": f"fold-{k}", "test_cases": 2,
                          "means": {"mean_dice_foreground": v}}
                         for k, v in ((1, 0.75), (2, 0.8), (3, 0.85))]}
    spread = {"metric": "mean_dice_foreground", "rows": 6, "median": 0.81, "q1": 0.77,
              "q3": 0.84, "min": 0.6, "min_case": "c5", "max": 0.9}
    comparison = {"a": {"name": "cv-a", "kind": "folds", "runs": 3},
                  "b": {"name": "cv-b", "kind": "folds", "runs": 3},
                  "metrics": [{"metric": "mean_dice_foreground", "mean_a": 0.8, "mean_b": 0.7,
                               "difference": 0.1, "ci_low": 0.05, "ci_high": 0.15,
                               "wilcoxon_p": 0.03125, "significant": True, "notes": []}]}
    report = build_report(spec, MANIFEST, METRICS, repeats=folds, splits=splits,
                          per_case=spread, comparisons=[comparison])
    assert checks(report)["train/validation/test allocation stated"]
    assert checks(report)["number of runs given; variance reported"]
    page = report.markdown("cv-a")
    assert ("| train/validation/test allocation stated | yes | case-level 3-fold cross-validation "
            "over 6 cases of /d/Task90 (seed 0, stratified by site); fold sizes 2, 2, 2; no case "
            "in two folds |") in page
    assert "| number of runs given; variance reported | yes | 3 folds (k-fold cross-validation, one training each) |" in page
    assert "- fold 2: c2, c5" in page
    assert "## Test metrics over 3 folds" in page and "| fold-3 | 2 | 0.8500 |" in page
    assert ("mean_dice_foreground over 6 case(s) (per_case.csv): median 0.8100, quartiles "
            "[0.7700, 0.8400], range [0.6000 (c5), 0.9000]") in page
    assert "## Comparison with cv-b" in page
    assert ("| mean_dice_foreground | 0.8000 | 0.7000 | +0.1000 | [+0.0500, +0.1500] | 0.0312 | "
            "significant |") in page
