"""Loss on assistant turns only, for any chat template.

Many templates (SmolLM2's own included) have no `{% generation %}` markers, so TRL's `assistant_only_loss`
cannot find the assistant spans. We find them ourselves: render the conversation up to each assistant turn
with the generation prompt; the assistant text starts where that prefix ends and runs to the end of the
turn's content; the special token right after it (`<|im_end|>`, `<|eot_id|>`, ...) is trainable too, so
the model learns to stop. Token offsets map the character spans onto tokens. Then an independent check
decodes the trainable runs and compares them with the messages: a template that drops, rewrites or
reorders assistant text, is not prefix-stable, or ends turns without a special token fails loudly.

Rows whose assistant tokens were all cut by `max_length` are dropped and counted (the manifest says how
many), so no batch ever has zero trainable tokens; if every row is dropped the stage fails.
"""

from __future__ import annotations

from typing import Any

from rualign.errors import RualignError

TEMPLATE_HINT = "use chat_template: chatml_no_system, or a template that renders assistant turns verbatim"


def _render(tokenizer: Any, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def assistant_char_spans(tokenizer: Any, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) character span of each assistant turn's text."""
    first = next((i for i, m in enumerate(messages) if m["role"] != "system"), None)
    if first is not None and messages[first]["role"] == "assistant":  # the data's fault, not the template's
        raise RualignError(f"the conversation starts with an assistant turn (turn {first}): there is no user "
                           "message for it to answer",
                           hint="fix or drop the row (`rualign data` sets such rows aside with a reason)")
    full = _render(tokenizer, messages, False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = _render(tokenizer, messages[:i], True) if i else ""
        if not full.startswith(prefix):
            raise RualignError(f"the chat template is not prefix-stable at turn {i}: rendering the "
                               "conversation up to an assistant turn does not give the start of the full "
                               "rendering", hint=TEMPLATE_HINT)
        content = message["content"].strip()
        at = full.find(content, len(prefix))
        gap = full[len(prefix):at] if at >= 0 else ""
        if at < 0 or gap.strip():
            raise RualignError(f"the chat template does not render assistant turn {i} verbatim after the "
                               "generation prompt", hint=TEMPLATE_HINT)
        spans.append((len(prefix), at + len(content)))
    return full, spans


def _special_ids(tokenizer: Any) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    for token_id, token in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(token, "special", False):
            ids.add(int(token_id))
    return ids


def tokenize_with_mask(tokenizer: Any, messages: list[dict]) -> tuple[list[int], list[int]]:
    """input_ids and a 0/1 mask: 1 on assistant text tokens and the end-of-turn token after each."""
    full, spans = assistant_char_spans(tokenizer, messages)
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    mask = [0] * len(ids)
    special = _special_ids(tokenizer)
    for turn, (start, end) in enumerate(spans):
        last = None
        for k, (a, b) in enumerate(offsets):
            if a < end and b > start:
                mask[k] = 1
                last = k
        after = (last + 1) if last is not None else next((k for k, (a, _) in enumerate(offsets) if a >= end), None)
        if after is None or after >= len(ids) or ids[after] not in special:
            raise RualignError(f"assistant turn {turn + 1} is not followed by a special end-of-turn token, so "
                               "the model could not learn to stop", hint=TEMPLATE_HINT)
        mask[after] = 1
    return ids, mask


def trainable_runs(mask: list[int]) -> list[tuple[int, int]]:
    runs, start = [], None
    for k, bit in enumerate(list(mask) + [0]):
        if bit and start is None:
            start = k
        elif not bit and start is not None:
            runs.append((start, k))
            start = None
    return runs


def check_mask(tokenizer: Any, messages: list[dict], ids: list[int], mask: list[int]) -> None:
    """Independent check: the trainable runs decode to exactly the assistant contents + end-of-turn token."""
    answers = [m["content"].strip() for m in messages if m["role"] == "assistant"]
    runs = trainable_runs(mask)
    if len(runs) != len(answers):
        raise RualignError(f"assistant mask has {len(runs)} trainable span(s) for {len(answers)} assistant "
                           "turn(s)", hint=TEMPLATE_HINT)
    special = _special_ids(tokenizer)
    for number, ((a, b), answer) in enumerate(zip(runs, answers), start=1):
        if ids[b - 1] not in special:
            raise RualignError(f"assistant span {number} does not end with an end-of-turn token",
                               hint=TEMPLATE_HINT)
        text = tokenizer.decode(ids[a:b - 1], skip_special_tokens=False).strip()
        if text != answer:
            raise RualignError(f"assistant span {number} decodes to {text[:60]!r}, expected the assistant "
                               f"message {answer[:60]!r}", hint=TEMPLATE_HINT)


def render_marked(tokenizer: Any, ids: list[int], mask: list[int]) -> str:
    """The example as text with trainable tokens inside [[ ]]: logged before training, for a human eye."""
    out, runs = [], trainable_runs(mask)
    cursor = 0
    for a, b in runs:
        out.append(tokenizer.decode(ids[cursor:a], skip_special_tokens=False))
        out.append("[[" + tokenizer.decode(ids[a:b], skip_special_tokens=False) + "]]")
        cursor = b
    out.append(tokenizer.decode(ids[cursor:], skip_special_tokens=False))
    return "".join(out)


def ensure_pad_token(tokenizer: Any, model: Any = None) -> str:
    """Make pad != eos: with pad == eos, collators mask the end-of-turn label and the model never stops.

    Reuses an existing special token that is neither eos nor bos when there is one (no new embedding row);
    otherwise adds `<|pad|>` and resizes the model's embeddings. Returns what was done, for the manifest.
    """
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return f"kept pad token {tokenizer.pad_token!r}"
    taken = {tokenizer.eos_token_id, tokenizer.bos_token_id}
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id not in taken:
        tokenizer.pad_token = tokenizer.unk_token
        action = f"pad token set to the unused unk token {tokenizer.unk_token!r} (was eos)"
    else:
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
        if model is not None and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
        action = "added a new <|pad|> token (no unused special token)"
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return action


def build_sft_dataset(rows: list[dict], ctx: Any):
    """Tokenize chat rows with assistant masks (the `sft` row's dataset builder)."""
    from datasets import Dataset

    tokenizer, max_length = ctx.tokenizer, ctx.stage.max_length
    columns: dict[str, list] = {"input_ids": [], "completion_mask": []}
    dropped, truncated, checked = [], 0, False
    for row in rows:
        ids, mask = tokenize_with_mask(tokenizer, row["messages"])
        if not checked:  # one full check + a marked rendering before any training step
            check_mask(tokenizer, row["messages"], ids, mask)
            ctx.log("trainable tokens of the first example are inside [[ ]]:\n"
                    + render_marked(tokenizer, ids, mask))
            ctx.mask_example = render_marked(tokenizer, ids[:max_length], mask[:max_length])
            checked = True
        if len(ids) > max_length:
            truncated += 1
            ids, mask = ids[:max_length], mask[:max_length]
        if not any(mask):
            dropped.append(row.get("id"))
            continue
        columns["input_ids"].append(ids)
        columns["completion_mask"].append(mask)
    ctx.record_rows({
        "in": len(rows), "kept": len(columns["input_ids"]), "truncated": truncated,
        "dropped_no_trainable_tokens": len(dropped), "dropped_ids": dropped[:20]})
    if rows and not columns["input_ids"]:
        raise RualignError(f"every row lost all assistant tokens to truncation at max_length={max_length}",
                           hint="raise max_length")
    return Dataset.from_dict(columns)


def sft_config_kwargs(params: Any, ctx: Any) -> dict:
    # The dataset is already tokenized with our own masks; TRL's collator applies `completion_mask`.
    kwargs = {"completion_only_loss": True, "packing": False}
    if params.neftune_noise_alpha is not None:
        kwargs["neftune_noise_alpha"] = params.neftune_noise_alpha
    return kwargs
