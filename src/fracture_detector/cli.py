"""Command line: `fracture-detector push FOLDER ORG/NAME` (also `python -m fracture_detector`)."""

from __future__ import annotations

import argparse
import sys

from .hub import HubError, push


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="fracture-detector", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    push_p = sub.add_parser("push", help="upload a saved model folder to a Hub (token from HF_TOKEN)")
    push_p.add_argument("folder")
    push_p.add_argument("repo_id", metavar="ORG/NAME")
    push_p.add_argument("--private", action="store_true")
    push_p.add_argument("--revision", help="branch to push to (created if missing)")
    args = p.parse_args(argv)
    if args.command == "push":
        try:
            url = push(args.folder, args.repo_id, private=args.private, revision=args.revision)
        except HubError as e:
            sys.exit(f"error: {e}")
        print(f"pushed {args.folder} to {url}")


if __name__ == "__main__":
    main()
