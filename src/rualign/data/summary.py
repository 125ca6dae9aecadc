"""Terminal summary of a data manifest (what `rualign data` and the demo print)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_summary(manifest: dict, out_dir: str | None, *, dry_run: bool = False) -> None:
    console = Console(width=max(Console().width, 110))
    title = "data recipe (dry run: nothing written)" if dry_run else "data recipe"
    if manifest.get("cached"):
        title += " — cached, reused"
    table = Table(title=title)
    for column in ("source", "format", "in", "quarantined", "removed", "kept", "sampled", "tokens mean/p50/p90"):
        table.add_column(column, overflow="fold")
    for name, source in manifest["sources"].items():
        stats = source["answer_tokens"]
        lengths = f"{stats['mean']:.0f}/{stats['median']:.0f}/{stats['p90']:.0f}" if stats.get("n") else "-"
        table.add_row(name, source["format"], str(source["rows_in"]), str(source["quarantined"]),
                      str(sum(source["removed"].values())), str(source["kept"]), str(source["sampled"]), lengths)
    console.print(table)
    for name, source in manifest["sources"].items():
        removed = ", ".join(f"{k} {v}" for k, v in source["removed"].items())
        if removed:
            console.print(f"[bold]{name}[/bold] removed by filter: {removed}")
        if source.get("chosen_window"):
            w = source["chosen_window"]
            console.print(f"[bold]{name}[/bold]: chosen answer_tokens window {w['min']}–{w['max']} "
                          f"({w['rows']} rows, mean {w['mean']}, target {w['target_mean']})")
        for warning in source.get("warnings", []):
            console.print(f"[yellow]warning[/yellow] {name}: {warning}")
    counts = manifest["counts"]
    console.print(f"kind: {manifest['kind']} · train {counts['train']} · val {counts['val']} · "
                  f"rejected {counts['rejected']} (see rejected.jsonl)")
    if out_dir and not dry_run:
        console.print(f"written to [bold]{out_dir}[/bold]")
