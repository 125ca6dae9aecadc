"""Judge-free per-run metrics: language fidelity, degeneration, and loss on held-out reference answers.

A tiny judge is at chance (see the judge card), so a demo's meaning has to come from numbers that need no
judge:

- `ru_share`: the share of Cyrillic among the letters of an answer, outside fenced code blocks and inline
  code (code is English by nature and says nothing about the model's Russian). Per run: the mean over
  answers that have any letters outside code, so every prompt weighs the same, as in the score.
- `distinct2`: distinct word bigrams / all word bigrams of one answer (Li et al. 2016's distinct-n, per
  answer, so it measures loops inside an answer, not the variety across prompts). Tokens are lower-cased
  words and single punctuation marks (`\\w+|[^\\w\\s]`), independent of any model's tokenizer, so runs of
  different models compare. Per run: the mean over answers with at least one bigram.
- `ref_loss`: the model's mean cross-entropy (nats per token, its own tokenizer) on the assistant turns
  of held-out reference conversations, prompt tokens masked, as in training. Lower = the model finds
  good Russian answers likelier. Comparable between runs of one base model (same tokenizer), not across
  base models with different tokenizers. Computed where the model is loaded (the answers stage).
"""

from __future__ import annotations

import re
from typing import Any, Iterable

_FENCED = re.compile(r"(```|~~~).*?(\1|\Z)", re.DOTALL)  # an unclosed fence runs to the end of the text
_INLINE = re.compile(r"`[^`\n]*`")
_TOKENS = re.compile(r"\w+|[^\w\s]")


def strip_code(text: str) -> str:
    """The text without fenced code blocks and inline code spans."""
    return _INLINE.sub(" ", _FENCED.sub(" ", text))


def _is_cyrillic(ch: str) -> bool:
    return "\u0400" <= ch <= "\u052f"  # Cyrillic + Cyrillic Supplement


def ru_share(text: str) -> float | None:
    """Cyrillic letters / all letters outside code; None when there are no letters outside code."""
    letters = [ch for ch in strip_code(text) if ch.isalpha()]
    if not letters:
        return None
    return sum(1 for ch in letters if _is_cyrillic(ch)) / len(letters)


def word_tokens(text: str) -> list[str]:
    return _TOKENS.findall(text.lower())


def distinct2(text: str) -> float | None:
    """Distinct bigrams / bigrams over the answer's word tokens; None with fewer than two tokens."""
    tokens = word_tokens(text)
    bigrams = list(zip(tokens, tokens[1:]))
    if not bigrams:
        return None
    return len(set(bigrams)) / len(bigrams)


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def answer_metrics(answers: list[str]) -> dict[str, float | None]:
    """The run-level text metrics over its answers (None when no answer qualifies)."""
    return {"ru_share": _mean(ru_share(a) for a in answers), "distinct2": _mean(distinct2(a) for a in answers)}


def heldout_conversations(spec: str, limit: int) -> list[list[dict]]:
    """Held-out conversations for ref_loss: `bundled:grandmaster` reads the bundled test split (never
    trained on by the demo); a path reads any GrandMaster/chat-format JSONL file."""
    from rualign.data.formats import normalise
    from rualign.data.sources import read_rows

    errors: list = []
    out = []
    for raw in read_rows(spec, "test", "error", errors):
        record = normalise("grandmaster" if "conversation" in raw.data else "chat", raw.data)
        out.append(record["messages"])
        if len(out) >= limit:
            break
    return out


def reference_loss(model: Any, tokenizer: Any, conversations: list[list[dict]], max_length: int = 512) -> dict:
    """Mean token loss on the assistant turns of each conversation's last exchange (prompt masked).

    Returns {"ref_loss": nats per answer token over all conversations, "tokens": n, "conversations": n}.
    One forward pass per conversation (no padding effects); sequences are cut at `max_length` tokens.
    """
    import torch

    total, count, used = 0.0, 0, 0
    device = next(model.parameters()).device
    model.eval()
    for messages in conversations:
        cut = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompt = tokenizer.apply_chat_template(messages[:cut], add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(messages[: cut + 1], tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
        if len(full_ids) <= len(prompt_ids) + 1:
            continue
        ids = torch.tensor([full_ids], device=device)
        labels = ids.clone()
        labels[0, : len(prompt_ids)] = -100
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].float()
        target = labels[0, 1:]
        losses = torch.nn.functional.cross_entropy(logits, target, ignore_index=-100, reduction="sum")
        total += float(losses)
        count += int((target != -100).sum())
        used += 1
    return {"ref_loss": total / count if count else None, "tokens": count, "conversations": used}
