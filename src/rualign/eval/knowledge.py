"""Multiple-choice knowledge check: does tuning for style cost the model facts?

Each question is scored cloze-style: the log-likelihood of every choice's text as the continuation of the
question (no letters, no listed options: small models cannot follow "answer with A-D", but they do assign
likelihoods). Two predictions per question: the choice with the highest summed log-probability (`raw`), and
the highest log-probability per character of the choice (`norm`, so long choices are not penalised for
having more tokens; lm-evaluation-harness calls this acc_norm). Accuracy CIs bootstrap over questions.

Question files (docs/formats.md, "Knowledge questions"): JSONL, one
`{"id", "category", "question", "choices": [...], "answer": <0-based index>}` per line.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rualign.errors import DataError
from rualign.runs import file_hash, write_manifest

BUNDLED_PREFIX = "bundled:"
EXPECTED = '{"id", "category", "question", "choices": [at least 2 strings], "answer": 0-based index}'
PLAIN_TEMPLATE = "Вопрос: {question}\nОтвет:"


class Question(BaseModel):
    id: str
    category: str
    question: str
    choices: list[str]
    answer: int


def resolve_questions_path(spec: str | Path) -> Path:
    """A JSONL path, or `bundled:NAME` for a question set shipped in rualign/data/samples."""
    spec = str(spec)
    if spec.startswith(BUNDLED_PREFIX):
        name = spec[len(BUNDLED_PREFIX):]
        candidate = Path(__file__).resolve().parent.parent / "data" / "samples" / f"{name}.jsonl"
        if not name or "/" in name or not candidate.is_file():
            raise DataError(f"no bundled question set named '{name}'", path=spec, expected="bundled:ru_mc")
        return candidate
    path = Path(spec).expanduser()
    if not path.is_file():
        raise DataError("questions file does not exist", path=path, expected="a JSONL file or bundled:ru_mc")
    return path


def _field_errors(row: Any) -> str | None:
    if not isinstance(row, dict):
        return f"a {type(row).__name__}, not an object"
    missing = [k for k in ("id", "question", "choices", "answer") if k not in row]
    if missing:
        return f"missing {', '.join(missing)}"
    unknown = sorted(set(row) - {"id", "category", "question", "choices", "answer"})
    if unknown:
        return f"unknown key(s) {', '.join(unknown)}"
    if not isinstance(row["id"], (str, int)) or isinstance(row["id"], bool) or str(row["id"]) == "":
        return "'id' must be a non-empty string or an integer"
    if not isinstance(row["question"], str) or not row["question"].strip():
        return "'question' must be a non-empty string"
    choices = row["choices"]
    if not isinstance(choices, list) or not all(isinstance(c, str) and c.strip() for c in choices):
        return "'choices' must be a list of non-empty strings"
    if len(choices) < 2:
        return f"'choices' has {len(choices)} choice(s); a question needs at least 2"
    if len(set(choices)) != len(choices):
        return "'choices' has the same text twice"
    answer = row["answer"]
    if not isinstance(answer, int) or isinstance(answer, bool):
        return f"'answer' must be an integer index, got {answer!r}"
    if not 0 <= answer < len(choices):
        return f"'answer' {answer} is out of range for {len(choices)} choices (0-based: 0..{len(choices) - 1})"
    if "category" in row and not isinstance(row["category"], str):
        return "'category' must be a string"
    return None


def load_questions(spec: str | Path) -> list[Question]:
    """Read and validate a question file; every problem names the file and the line."""
    from rualign.textio import iter_jsonl, read_utf8

    path = resolve_questions_path(spec)
    questions: list[Question] = []
    seen: dict[str, int] = {}
    for number, row in iter_jsonl(path, read_utf8(path), expected=EXPECTED):
        problem = _field_errors(row)
        if problem:
            raise DataError(problem, path=path, line=number, expected=EXPECTED)
        qid = str(row["id"])
        if qid in seen:
            raise DataError(f"duplicate id '{qid}' (first on line {seen[qid]})", path=path, line=number,
                            expected="one id per question")
        seen[qid] = number
        questions.append(Question(id=qid, category=row.get("category") or "uncategorised",
                                  question=row["question"], choices=row["choices"], answer=row["answer"]))
    if not questions:
        raise DataError("no questions in the file", path=path, expected=EXPECTED)
    return questions


# ------------------------------------------------------------------------------------------- scoring

def encode_pairs(tokenizer: Any, questions: list[Question], style: str) -> list[tuple[list[int], list[int]]]:
    """(context ids, continuation ids) for every (question, choice), question-major.

    Context and choice are tokenized separately and concatenated, so a choice's tokens never depend on a
    merge across the boundary and every choice of a question shares exactly the same context tokens."""
    pairs = []
    for q in questions:
        if style == "chat":
            text = tokenizer.apply_chat_template([{"role": "user", "content": q.question}], tokenize=False,
                                                 add_generation_prompt=True)
            context, lead = tokenizer(text, add_special_tokens=False)["input_ids"], ""
        else:
            context, lead = tokenizer(PLAIN_TEMPLATE.format(question=q.question))["input_ids"], " "
        for choice in q.choices:
            pairs.append((list(context), tokenizer(lead + choice, add_special_tokens=False)["input_ids"]))
    return pairs


def sequence_logprobs(model: Any, pairs: list[tuple[list[int], list[int]]], *, batch_size: int = 16,
                      pad_id: int = 0, autocast: bool = False) -> list[float]:
    """Summed log-probability of each continuation given its context, batched (right padding, longest first
    so batches hold similar lengths). Padding sits after every real token, so a causal model's logits at real
    positions do not see it: batching changes nothing but float rounding (tested). `autocast`: bf16 matmuls
    on a CPU with native bf16 (2-4x faster; log-probabilities move in the third decimal)."""
    import contextlib

    import torch

    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    out = [0.0] * len(pairs)
    device = next(model.parameters()).device
    for start in range(0, len(order), max(1, batch_size)):
        chunk = order[start:start + batch_size]
        seqs = [pairs[i][0] + pairs[i][1] for i in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        cast = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with torch.inference_mode(), cast:
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        for row, index in enumerate(chunk):
            ctx, cont = pairs[index]
            # Position t predicts token t+1: the continuation's tokens are predicted from len(ctx)-1 on.
            rows = logits[row, len(ctx) - 1: len(ctx) - 1 + len(cont)].float().log_softmax(-1)
            target = torch.tensor(cont, device=rows.device).unsqueeze(1)
            out[index] = float(rows.gather(1, target).sum())
    return out


def predict(questions: list[Question], logprobs: list[float]) -> list[dict]:
    """Per-question predictions from the question-major list of choice log-probabilities."""
    rows, at = [], 0
    for q in questions:
        lp = logprobs[at: at + len(q.choices)]
        at += len(q.choices)
        norm = [v / max(1, len(c)) for v, c in zip(lp, q.choices)]
        pred = max(range(len(lp)), key=lambda i: lp[i])
        pred_norm = max(range(len(norm)), key=lambda i: norm[i])
        rows.append({"id": q.id, "category": q.category, "answer": q.answer, "pred": pred, "pred_norm": pred_norm,
                     "correct": pred == q.answer, "correct_norm": pred_norm == q.answer,
                     "logprobs": [round(v, 5) for v in lp]})
    return rows


def summarize(predictions: list[dict], *, seed: int = 0, n_boot: int = 2000) -> dict:
    """Accuracy (raw and length-normalised) with percentile bootstrap CIs over questions, overall and per
    category. Accuracies are fractions in [0, 1]."""
    import numpy as np

    from rualign.eval.stats import bootstrap_ci

    def block(rows: list[dict]) -> dict:
        raw = np.array([r["correct"] for r in rows], dtype=float)
        norm = np.array([r["correct_norm"] for r in rows], dtype=float)
        rng = np.random.default_rng(seed)
        low, high = bootstrap_ci(raw, rng, n_boot)
        low_n, high_n = bootstrap_ci(norm, rng, n_boot)
        return {"accuracy": float(raw.mean()), "ci_low": low, "ci_high": high, "accuracy_norm": float(norm.mean()),
                "ci_low_norm": low_n, "ci_high_norm": high_n, "n": len(rows)}

    categories = sorted({r["category"] for r in predictions})
    summary = block(predictions)
    summary["per_category"] = {c: block([r for r in predictions if r["category"] == c]) for c in categories}
    summary["chance"] = float(np.mean([1.0 / len(r["logprobs"]) for r in predictions]))
    return summary


def score_model(model: Any, tokenizer: Any, questions: list[Question], *, style: str = "plain",
                batch_size: int = 16, seed: int = 0, autocast: bool = False) -> dict:
    """knowledge.json's content for an already loaded model (injected, so tests use tiny models)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    logprobs = sequence_logprobs(model, encode_pairs(tokenizer, questions, style), batch_size=batch_size,
                                 pad_id=pad, autocast=autocast)
    predictions = predict(questions, logprobs)
    return {**summarize(predictions, seed=seed), "style": style, "autocast": "bf16" if autocast else None,
            "predictions": predictions}


def run_knowledge(model: str, questions: str | Path, out_dir: str | Path, *, style: str = "plain",
                  chat_template: str = "model", batch_size: int = 16, limit: int | None = None,
                  seed: int = 0, bf16: str = "auto", trust_remote_code: bool = False,
                  config_hash: str | None = None) -> dict:
    """Load the model, score every question, write OUT/knowledge.json and OUT/manifest.json (its config_hash:
    the caller's, e.g. a pipeline node's key, else the questions file's hash)."""
    import torch

    from rualign.eval.backends import bf16_autocast_ok
    from rualign.models import load_model, load_tokenizer

    started = time.perf_counter()
    items = load_questions(questions)[:limit] if limit else load_questions(questions)
    if style == "chat":
        tokenizer = load_tokenizer(model, chat_template=chat_template, trust_remote_code=trust_remote_code)
    else:
        tokenizer = _plain_tokenizer(model, trust_remote_code)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lm = load_model(model, trust_remote_code=trust_remote_code).to(device).eval()
    autocast = device == "cpu" and (bf16 == "on" or (bf16 == "auto" and bf16_autocast_ok()))
    result = score_model(lm, tokenizer, items, style=style, batch_size=batch_size, seed=seed, autocast=autocast)
    result = {"model": str(model), "questions": str(questions),
              "questions_hash": file_hash(resolve_questions_path(questions)), **result,
              "seconds": round(time.perf_counter() - started, 2)}
    from rualign.records import KnowledgeResult, write_knowledge

    out_dir = Path(out_dir)
    write_knowledge(out_dir / "knowledge.json", KnowledgeResult(**result))
    write_manifest(out_dir, stage="knowledge", config_hash=config_hash or result["questions_hash"], model=str(model),
                   questions=str(questions), n=result["n"], style=style, limit=limit, seconds=result["seconds"])
    return result


def _plain_tokenizer(model: str, trust_remote_code: bool = False) -> Any:
    """The plain style needs no chat template (a base model without one is fine)."""
    from transformers import AutoTokenizer

    from rualign.models import _hub_error, resolve_model

    try:
        return AutoTokenizer.from_pretrained(resolve_model(model), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _hub_error(model, exc) from exc
