"""`rualign data RECIPE.yaml --out DIR`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data", help="build a training data folder from a recipe (filter, sample, mix, split)",
        description="Run a data recipe: read each source (jsonl, json, parquet, save_to_disk folder, hf:<id>, "
                    "bundled:<name>), normalise it, apply its filters (answer tokens, score, regex, language, "
                    "dedup...), sample and mix, split train/val by a stable prompt hash, and write train.jsonl, "
                    "val.jsonl, rejected.jsonl and manifest.json. A finished folder with the same recipe and "
                    "inputs is reused.")
    parser.add_argument("recipe", help="recipe YAML file")
    parser.add_argument("--out", help="output folder (required unless --dry-run)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and counts, write nothing")
    parser.add_argument("--force", action="store_true", help="rebuild even if a finished output exists")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rualign.config import load_yaml
    from rualign.data.recipe import run_recipe
    from rualign.data.summary import print_summary
    from rualign.data.schema import Recipe
    from rualign.errors import RualignError

    if not args.out and not args.dry_run:
        raise RualignError("--out is required (or use --dry-run)")
    recipe = load_yaml(args.recipe, Recipe)
    resolve_paths(recipe, args.recipe)
    manifest = run_recipe(recipe, args.out, dry_run=args.dry_run, force=args.force)
    print_summary(manifest, args.out, dry_run=args.dry_run)
    return 0


def resolve_paths(recipe, recipe_file) -> None:
    """Source paths are relative to the working folder, or else to the recipe file's folder."""
    from pathlib import Path

    from rualign.config import resolve_relative

    for source in recipe.sources:
        source.path = resolve_relative(source.path, Path(recipe_file))
