"""Validation loss of a trial's trained model, the signal the median pruner compares between trials.

The trainer runs without evaluation (eval_strategy "no": it would cost every stage time it rarely needs),
so the sweep measures it itself once the last training stage has finished: mean cross-entropy per
assistant token (the tokens the stage trained on, masks.tokenize_with_mask) over the stage's val.jsonl.
Only chat data has such a loss; a preference stage (DPO, ...) or a recipe without a validation split
gives no value, and the trial then runs to the end (noted on the trial).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

MAX_ROWS = 64  # enough to rank trials; bounded so pruning stays cheap next to generation


def _last_train(plan) -> Any:
    nodes = [n for n in plan.nodes.values() if n.kind == "train"]
    return nodes[-1] if nodes else None


def validation_loss(plan, max_rows: int = MAX_ROWS) -> tuple[float | None, str]:
    """(loss, note): the loss, or None and why there is none."""
    from rualign.runs import read_jsonl, read_manifest

    node = _last_train(plan)
    if node is None:
        return None, "no training stage: nothing to prune on"
    data = node.spec.get("data_folder") or str(plan.nodes[node.spec["data_node"]].folder)
    val = Path(data) / "val.jsonl"
    rows = read_jsonl(val)[:max_rows] if val.is_file() else []
    rows = [r for r in rows if isinstance(r.get("messages"), list)]
    if not rows:
        return None, f"no chat validation rows in {val} (set val_fraction > 0 in the recipe)"
    manifest = read_manifest(node.folder / node.spec["stage"].name)
    model_path = getattr(manifest, "model_path", None)
    if not model_path:
        return None, "the training stage wrote no model_path"
    exp = node.spec["experiment"]
    loss = chat_loss(model_path, rows, chat_template=exp.chat_template, max_length=node.spec["stage"].max_length)
    if math.isnan(loss):
        return None, f"no assistant tokens in the validation rows of {val}"
    return loss, ""


def chat_loss(model_path: str, rows: list[dict], *, chat_template: str = "model", max_length: int = 2048) -> float:
    """Token-weighted mean cross-entropy on assistant tokens of chat rows."""
    import torch

    from rualign.models import load_model, load_tokenizer
    from rualign.train.masks import tokenize_with_mask

    tokenizer = load_tokenizer(model_path, chat_template=chat_template)
    model = load_model(model_path).eval()
    total, count = 0.0, 0
    for row in rows:
        ids, mask = tokenize_with_mask(tokenizer, row["messages"])
        ids, mask = ids[:max_length], mask[:max_length]
        labels = [t if m else -100 for t, m in zip(ids, mask)]
        trained = sum(1 for label in labels[1:] if label != -100)  # the model's loss shifts by one token
        if not trained:
            continue
        with torch.inference_mode():
            loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()
        total += loss * trained
        count += trained
    return total / count if count else float("nan")
