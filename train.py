"""Train (or re-score) the fracture classifier.

    python train.py --data path/to/imagefolder --output-dir runs/fd
    python train.py --data kaggle=path/to/one other=path/to/two --output-dir runs/fd   # several sources
    python train.py --eval-only runs/fd --data some/image/folder [more/folders ...]
    python train.py --data ... --output-dir runs/fd --push-to-hub ORG/NAME   # token from HF_TOKEN
    accelerate launch --num_processes 2 --cpu train.py --data ...   # several processes

Everything happens in `fracture_detector.training`; this file only parses arguments.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

try:
    from accelerate import PartialState

    from fracture_detector.data import DataError
    from fracture_detector.training import TrainConfig, TrainingError, evaluate_folder, train
except ImportError as e:  # the serving install: no PyTorch, timm, datasets or accelerate
    sys.exit(f"train.py needs the full install ({e.name} is missing): pip install 'fracture-detector[train]', "
             "or pip install -r requirements.txt")
from fracture_detector.errors import HubError, ModelError  # noqa: E402
from fracture_detector.hub import push  # noqa: E402


def add_config_options(parser: argparse.ArgumentParser, config=TrainConfig) -> None:
    """One `--option` per field of the `config` dataclass, with its default, type and help from the field."""
    for f in dataclasses.fields(config):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                                help=f.metadata.get("help"))
            continue
        required = f.default is dataclasses.MISSING
        parser.add_argument(flag, type=str if required else type(f.default), required=required,
                            default=None if required else f.default, choices=f.metadata.get("choices"),
                            nargs=f.metadata.get("nargs"), help=f.metadata.get("help"))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_options(p)
    p.add_argument("--eval-only", metavar="MODEL_DIR", help="re-score a saved model on --data and exit")
    p.add_argument("--metrics-out", help="with --eval-only: also write the metrics as JSON here")
    p.add_argument("--push-to-hub", metavar="ORG/NAME", help="after training, upload the folder (token: HF_TOKEN)")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")
    p.add_argument("--revision", help="with --push-to-hub: branch to push to (created if missing)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        run(args)
    except (DataError, HubError, ModelError, TrainingError) as e:
        sys.exit(f"error: {e}")


def run(args: argparse.Namespace) -> None:
    if args.eval_only:
        result = evaluate_folder(args.eval_only, args.data, bootstrap=args.bootstrap)
        if args.metrics_out:
            Path(args.metrics_out).write_text(json.dumps(result, indent=2))
        return
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    out_dir = train(TrainConfig(**options))
    if args.push_to_hub and PartialState().is_main_process:  # under `accelerate launch`, rank 0 pushes
        try:
            url = push(out_dir, args.push_to_hub, private=args.private, revision=args.revision)
        except HubError as e:
            raise HubError(f"{e}\nThe trained model is saved in {out_dir}; retry with: "
                           f"python -m fracture_detector push {out_dir} {args.push_to_hub}") from None
        print(f"pushed {out_dir} to {url}")


if __name__ == "__main__":
    main()
