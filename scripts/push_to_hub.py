#!/usr/bin/env python
"""Publish a FLIP training output directory (model, processor, model card) to the Hugging Face Hub.

    python scripts/push_to_hub.py outputs/flip-movielens my-org/flip-movielens --private

The model card is re-rendered first so that its usage snippet names REPO_ID; everything in
OUTPUT_DIR except Trainer checkpoints (checkpoint-*) goes up in one commit.
"""

import argparse
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path, help="a directory written by scripts/train.py or save_pretrained")
    parser.add_argument("repo_id", help="the Hub repo to create or update, e.g. my-org/flip-movielens")
    parser.add_argument("--private", action="store_true", help="create the repo as private (if it does not exist)")
    parser.add_argument("--revision", help="the branch to push to (created if missing); defaults to main")
    parser.add_argument("--create_pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--token", help="a Hub token; defaults to HF_TOKEN or the token saved by `hf auth login`")
    parser.add_argument("--commit_message", help="defaults to 'Upload FLIP model'")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not (args.output_dir / "config.json").is_file():
        print(f"error: {args.output_dir} holds no config.json; pass a saved FLIP model directory.", file=sys.stderr)
        return 2
    import flip_hf  # noqa: F401  (registers FLIP's Auto classes, which re-rendering the card uses)
    from flip_hf.hub import push_to_hub

    commit = push_to_hub(
        args.output_dir,
        args.repo_id,
        private=args.private or None,
        revision=args.revision,
        create_pr=args.create_pr,
        token=args.token,
        commit_message=args.commit_message,
    )
    print(commit.pr_url or commit.commit_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
