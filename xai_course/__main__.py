"""Command line: ``python -m xai_course train NAME [--seed S]``, ``python -m xai_course train-inversion NAME
[--seed S]`` and ``python -m xai_course verify``."""

import argparse

from . import data, inversion, models, training


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m xai_course")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a course model and ship its weights to data/")
    train.add_argument("name", choices=sorted(models.RECIPES))
    train.add_argument("--seed", type=int, default=0)
    decoder = commands.add_parser(
        "train-inversion", help="train an inversion decoder or attack (chapter 04) and ship its weights to data/"
    )
    decoder.add_argument("name", choices=sorted(inversion.DECODERS) + sorted(inversion.ATTACKS))
    decoder.add_argument("--seed", type=int, default=0)
    commands.add_parser("verify", help="check the SHA-256 of every shipped file")
    args = parser.parse_args(argv)
    if args.command in ("train", "train-inversion"):
        entry = training.ship(args.name, seed=args.seed)
        print(f"{args.name}: {entry['size']} bytes, sha256 {entry['sha256']}")
    else:
        for name in data.verify():
            print(f"ok  {name}")


if __name__ == "__main__":
    main()
