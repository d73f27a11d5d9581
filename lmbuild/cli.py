"""The ``lmbuild`` command: what a config means, and why a build would run.

    lmbuild config [--configfile F ...] [--config KEY=VALUE ...] [--directory D]
    lmbuild why [TARGET ...] [--configfile F ...] [--config KEY=VALUE ...] [--directory D]

Both read the config exactly as the Snakefile does (lmbuild.build.layers, lmbuild.build.config) and take
Snakemake's own ``--configfile``, ``--config`` and ``--directory``, so the same words describe
the same build. ``config`` prints every value with the layer it came from; ``why`` prints, for
every artifact the targets need that is not built, what differs from the nearest built one
(lmbuild.build.why). Building is Snakemake's: this command runs nothing.
"""

from __future__ import annotations

import argparse
import os
import sys

from lmbuild.build.stages import ROOT
from lmbuild.errors import UserError

STATE = ".snakemake/lmbuild/file-hashes.json"  # the Snakefile's file-hash cache (rules/common.smk)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lmbuild", description="What an lmbuild config means, and why a build would run.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("config", "print the effective config, each value with where it came from"), ("why", "say what a build of the targets would make, and why")):
        s = sub.add_parser(name, help=text, description=text)
        if name == "why":
            s.add_argument("targets", nargs="*", metavar="TARGET", help="as for snakemake (default: all)")
        s.add_argument("--configfile", "--configfiles", nargs="+", default=[], metavar="FILE", help="config files, lowest first (default: the demo's config.yaml)")
        s.add_argument("--config", "-C", nargs="+", default=[], metavar="KEY=VALUE", help="top-level values over the files, as snakemake --config")
        s.add_argument("--directory", "-d", default=".", metavar="DIR", help="the working directory of the build (default: here)")
    return p


def load(configfiles: list[str], config_args: list[str]):
    """(layers, validated config): the Snakefile's config (rules/common.smk) from the same words."""
    from snakemake.cli import parse_config

    from lmbuild.build import layers
    from lmbuild.build.config import validate

    try:
        cli = parse_config(config_args)
    except ValueError as exc:
        raise UserError(f"config: --config: {exc}") from None
    layered = layers.load(list(configfiles), cli, demo=ROOT / layers.DEMO)
    return layered, validate(layered.config, source="config")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        layered, config = load(args.configfile, args.config)
        os.chdir(args.directory)
        if args.command == "config":
            from lmbuild.build import layers
            from lmbuild.build.presets import PRESETS

            preset = config["data"]["clean"]["preset"]
            where = layers.origins(config, layered.origins, PRESETS.get(preset), preset)
            sys.stdout.write(layers.show(config, where))
        else:
            from lmbuild.build.filestate import StateCache
            from lmbuild.build.graph import Plan
            from lmbuild.build.why import explain

            state = StateCache(STATE)
            plan = Plan(config, state=state)
            state.save()
            sys.stdout.write(explain(plan, args.targets))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
