"""The joint length/style-controlled fit for `rualign report`: every group of >= 2 judged runs that share a
reference answers file gets one fit (eval/joint.py), and each of its runs its lc / sc with CIs.

A run alone against its reference keeps only the per-run LC (score.json `lc_score`), shown as a diagnostic
under its own name: a per-run slope cannot tell "long" from "good".
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from rualign.errors import RualignError

log = logging.getLogger(__name__)
JOINT_KEYS = ("lc", "lc_ci_low", "lc_ci_high", "sc", "sc_ci_low", "sc_ci_high")
N_BOOT = 1000


def joint_by_folder(folders: list[Path], *, n_boot: int = N_BOOT, seed: int = 0) -> tuple[dict[str, dict], list[str]]:
    """{str(folder): {lc, lc_ci_low, ..., joint_runs}} for runs in a group of >= 2, plus notes for the report."""
    from rualign.eval.leaderboard import _run_folder, group_by_reference
    from rualign.report.leaderboard import fit_group

    inputs, where = [], {}
    for folder in folders:
        if not (Path(folder) / "judge" / "judgments.jsonl").is_file():
            continue
        try:
            run = _run_folder(Path(folder), f"{len(inputs)}:{Path(folder).name}", None)
        except RualignError as exc:  # no reference named: the run is reported without the joint fit
            log.info("no joint fit for %s: %s", folder, exc)
            continue
        if not run.reference.is_file():
            continue
        inputs.append(run)
        where[run.name] = str(folder)
    out, notes = {}, []
    for group in group_by_reference(inputs).values():
        if len(group) < 2:
            continue
        fitted = fit_group(group, n_boot, seed)  # tokenizer mismatches raise here, naming both files
        for row in fitted["rows"]:
            joint = {k: v for k, v in asdict(row).items() if k in JOINT_KEYS}
            out[where[row.name]] = {**joint, "joint_runs": len(group)}
        coefs = {c["name"]: c for c in fitted["coefficients"]["lc"]}
        if "length" in coefs:
            c = coefs["length"]
            notes.append(f"joint length control over {len(group)} runs sharing {fitted['reference']}: length "
                         f"coefficient {c['value']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] log-odds per unit "
                         f"of tanh(token difference / {c['scale']:.0f})")
    return out, notes
