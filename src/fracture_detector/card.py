"""Render the model card (`README.md` of a model folder) from the `model_card.md` template (package data)."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .errors import ModelError
from .resources import CARD_TEMPLATE

# What the card says about the data sources this project knows, by source name (`--data NAME=...`):
# title, where it comes from, licence. Any other source is named as given, its licence unknown to us.
KNOWN_DATASETS = {
    "fracture-multi-region": ("Fracture Multi-Region X-Ray Data",
                              "Kaggle, folder `Bone_Fracture_Binary_Classification`",
                              "Open Data Commons Attribution License (ODC-By 1.0)"),
    "roboflow-bone-fracture": ("Bone Fracture Detection, binary subset",
                               "Roboflow Universe project `bone-fracture-detection`, version 4",
                               "CC BY 4.0"),
    "fracatlas": ("FracAtlas (Abedeen et al., Scientific Data 10, 521, 2023)",
                  "the data set published with the paper (figshare); X-rays from hospitals in Bangladesh",
                  "CC BY 4.0"),
}
SPLIT_TITLES = {"clean_test": "clean group-disjoint test split", "shipped_test": "shipped test split, leaky"}


def describe_datasets(names: list[str]) -> list[dict]:
    """Name, title, origin and licence of each data source, for the card and the README."""
    described = []
    for name in names:
        title, origin, licence = KNOWN_DATASETS.get(name, (name, "a source this project does not know",
                                                            "see the data's own terms"))
        described.append({"name": name, "title": title, "origin": origin, "licence": licence})
    return described


def _eval_results(results: dict, datasets: list[dict], by_source: dict) -> list[EvalResult]:
    """`model-index` entries: each source's clean and shipped test splits (or the pooled ones for one source).

    Accuracy, sensitivity and specificity are all at the model's threshold: the decisions it ships.
    """
    out = []
    per_source = by_source if len(by_source) > 1 else {d["name"]: results for d in datasets}
    for d in datasets:
        for split, title in SPLIT_TITLES.items():
            r = per_source.get(d["name"], {}).get(split)
            if not r:
                continue
            for metric, value in (("roc_auc", r.get("roc_auc")), ("accuracy", r["accuracy_at_threshold"]),
                                  ("sensitivity", r["sensitivity"]), ("specificity", r["specificity"])):
                if value is not None:
                    out.append(EvalResult(
                        task_type="image-classification", dataset_type=d["name"],
                        dataset_name=f"{d['title']} ({title})", dataset_split=split,
                        metric_type=metric, metric_value=round(float(value), 4),
                    ))
    return out


def write_model_card(
    out_dir: Path, metrics: dict, report: dict, train_config: dict, label_names: list[str],
    repo_id: str = "ORG/fracture-detector",
) -> ModelCard:
    """Fill the template with the run's real metrics and YAML metadata; writes `out_dir/README.md`.

    `train_config` is the run's `train_config.json` as a dict; `repo_id` is the Hub id shown
    in the usage snippet and used as the model-index name.
    """
    card = _render(metrics, report, train_config, label_names, repo_id)
    card.save(Path(out_dir) / "README.md")
    return card


def _render(metrics: dict, report: dict, train_config: dict, label_names: list[str], repo_id: str) -> ModelCard:
    model_name = repo_id.split("/")[-1]
    # A folder from before several sources were supported has one source, of the Kaggle data.
    datasets = describe_datasets(list(report.get("sources") or ["fracture-multi-region"]))
    by_source = metrics.get("by_source", {})
    card_data = ModelCardData(
        model_name=model_name,
        library_name="timm",
        pipeline_tag="image-classification",
        license="apache-2.0",
        tags=["image-classification", "timm", "medical-imaging", "x-ray", "fracture-detection"],
        metrics=["roc_auc", "accuracy", "sensitivity", "specificity"],
        datasets=report.get("hub_datasets") or None,  # Hub dataset ids only
        eval_results=_eval_results(metrics["results"], datasets, by_source),
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(CARD_TEMPLATE),
        model_name=model_name,
        repo_id=repo_id,
        label_names=label_names,
        metrics=metrics,
        report=report,
        config=train_config,
        test=metrics["results"].get("clean_test", {}),
        shipped=metrics["results"].get("shipped_test", {}),
        datasets=datasets,
        by_source=by_source if len(by_source) > 1 else {},
    )


def render_model_card(model_dir: str | Path, repo_id: str = "ORG/fracture-detector") -> ModelCard:
    """A saved model folder's card rendered for `repo_id` from its own JSON files (nothing is written).

    Raises `ModelError` when the files are missing or were written by another version of
    this package in a shape the template does not know.
    """
    model_dir = Path(model_dir)
    try:
        metrics, report, train_config, config = (
            json.loads((model_dir / name).read_text())
            for name in ("metrics.json", "data_report.json", "train_config.json", "config.json")
        )
        return _render(metrics, report, train_config, config["label_names"], repo_id)
    except Exception as e:  # a missing file, a missing key, a value of another type: one clear message
        raise ModelError(f"{model_dir}: cannot render its model card ({type(e).__name__}: {e}); its JSON files "
                         f"were not written by this version of fracture-detector's train.py") from None


def rewrite_model_card(model_dir: str | Path, repo_id: str = "ORG/fracture-detector") -> ModelCard:
    """Re-render a saved model folder's card for `repo_id` and write it to its `README.md`."""
    card = render_model_card(model_dir, repo_id)
    card.save(Path(model_dir) / "README.md")
    return card
