"""Render the model card (`README.md` of a model folder) from the top-level `model_card.md` template."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATE = Path(__file__).resolve().parents[2] / "model_card.md"
DATASET = "Fracture Multi-Region X-Ray Data"


def _eval_results(results: dict) -> list[EvalResult]:
    out = []
    titles = {"clean_test": "clean group-disjoint test split", "shipped_test": "shipped test split, leaky"}
    for split, title in titles.items():
        r = results.get(split)
        if not r:
            continue
        for metric, value in (("roc_auc", r.get("roc_auc")), ("accuracy", r["accuracy_argmax"]),
                              ("sensitivity", r["sensitivity"]), ("specificity", r["specificity"])):
            if value is not None:
                out.append(EvalResult(
                    task_type="image-classification", dataset_type="fracture-multi-region",
                    dataset_name=f"{DATASET} ({title})", dataset_split=split,
                    metric_type=metric, metric_value=round(float(value), 4),
                ))
    return out


def write_model_card(
    out_dir: Path, metrics: dict, report: dict, cfg, label_names: list[str], repo_id: str = "ORG/fracture-detector"
) -> ModelCard:
    """Fill the template with the run's real metrics and YAML metadata; writes `out_dir/README.md`.

    `repo_id` is the Hub id shown in the usage snippet and used as the model-index name.
    """
    model_name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        model_name=model_name,
        library_name="timm",
        pipeline_tag="image-classification",
        license="apache-2.0",
        tags=["image-classification", "timm", "medical-imaging", "x-ray", "fracture-detection"],
        metrics=["roc_auc", "accuracy", "sensitivity", "specificity"],
        datasets=[report["source"]] if report.get("source") else None,  # Hub dataset ids only
        eval_results=_eval_results(metrics["results"]),
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        model_name=model_name,
        repo_id=repo_id,
        label_names=label_names,
        metrics=metrics,
        report=report,
        config=asdict(cfg),
        test=metrics["results"].get("clean_test", {}),
        shipped=metrics["results"].get("shipped_test", {}),
    )
    card.save(Path(out_dir) / "README.md")
    return card


def rewrite_model_card(model_dir: str | Path, repo_id: str = "ORG/fracture-detector") -> ModelCard:
    """Re-render a saved model folder's card from its own JSON files (e.g. for another repo id)."""
    from .training import TrainConfig

    model_dir = Path(model_dir)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    report = json.loads((model_dir / "data_report.json").read_text())
    cfg = TrainConfig(**json.loads((model_dir / "train_config.json").read_text()))
    label_names = json.loads((model_dir / "config.json").read_text())["label_names"]
    return write_model_card(model_dir, metrics, report, cfg, label_names, repo_id=repo_id)
