"""Train (or re-score) the fracture classifier.

    python train.py --data ../shared/datasets/fracture-multi-region-unpacked --output-dir runs/fd
    python train.py --eval-only runs/fd --data some/image/folder
    python train.py --data ... --output-dir runs/fd --push-to-hub ORG/NAME   # token from HF_TOKEN
    accelerate launch --num_processes 2 --cpu train.py --data ...   # several processes

Everything happens in `fracture_detector.training`; this file only parses arguments.
"""

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from accelerate import PartialState

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from fracture_detector.data import DataError  # noqa: E402
from fracture_detector.hub import HubError, push  # noqa: E402
from fracture_detector.training import TrainConfig, evaluate_folder, train  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.name != "data"}
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True,
                   help="imagefolder directory ({train,val,test}/<label>/...) or a Hub dataset id")
    p.add_argument("--output-dir", default=defaults["output_dir"])
    p.add_argument("--arch", default=defaults["arch"], help="any timm model name")
    p.add_argument("--pretrained", action="store_true", help="start from ImageNet weights (needs the Hub)")
    p.add_argument("--epochs", type=int, default=defaults["epochs"])
    p.add_argument("--batch-size", type=int, default=defaults["batch_size"], help="per process")
    p.add_argument("--lr", type=float, default=defaults["lr"])
    p.add_argument("--weight-decay", type=float, default=defaults["weight_decay"])
    p.add_argument("--warmup-epochs", type=float, default=defaults["warmup_epochs"])
    p.add_argument("--label-smoothing", type=float, default=defaults["label_smoothing"])
    p.add_argument("--image-size", type=int, default=defaults["image_size"])
    p.add_argument("--seed", type=int, default=defaults["seed"])
    p.add_argument("--target-sensitivity", type=float, default=defaults["target_sensitivity"])
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=defaults["precision"])
    p.add_argument("--bootstrap", type=int, default=defaults["bootstrap"], help="bootstrap resamples for intervals")
    p.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last epoch")
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
    except (DataError, HubError) as e:
        sys.exit(f"error: {e}")


def run(args: argparse.Namespace) -> None:
    if args.eval_only:
        result = evaluate_folder(args.eval_only, args.data, bootstrap=args.bootstrap)
        if args.metrics_out:
            Path(args.metrics_out).write_text(json.dumps(result, indent=2))
        return
    options = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
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
