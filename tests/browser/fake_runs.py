"""FIXTURE DATA FOR TESTS ONLY: writes small, realistic fake experiment run folders (docs/formats.md).

The answers and judge preferences below are invented for the report tests; score.json is computed from
them by the real statistics code (rualign.eval.stats.compute_score), as the judge stage would.
"""

from __future__ import annotations

import json
from pathlib import Path

from rualign.eval.stats import compute_score
from rualign.records import AnswerRecord, JudgeInfo, Judgment, read_answers

XSS_ANSWER = ('Ответ с разметкой: <script>alert(1)</script> и <img src=x onerror="alert(2)"> '
              '</script><b>не жирный</b> & "кавычки"')
SEARCH_WORD = "клубника"  # appears in one prompt only (p5), so search shows that prompt once per run
CATEGORIES = {"p1": "writing", "p2": "writing", "p3": "writing", "p4": "math", "p5": "math", "p6": "math",
              "p7": "coding", "p8": "coding"}
PROMPTS = {
    "p1": "Напиши короткое письмо коллеге с благодарностью за помощь.",
    "p2": "Сочини четверостишие про осенний Петербург.",
    "p3": "Объясни разницу между эссе и статьёй.",
    "p4": "Сколько будет 17 * 23? Покажи решение.",
    "p5": f"Если 3 кг ягод (малина и {SEARCH_WORD}) стоят 900 рублей, сколько стоят 5 кг?",
    "p6": "Найди производную функции x^3 + 2x.",
    "p7": "Напиши функцию на Python, которая переворачивает строку.",
    "p8": "Что делает команда `git rebase -i`?",
}
REFERENCE_TOKENS = {"p1": 310, "p2": 120, "p3": 540, "p4": 260, "p5": 330, "p6": 280, "p7": 450, "p8": 610}
# Per run: preference for the model answer in (model_first, reference_first); None = failed judge call.
RUNS = {
    "sft-grandmaster": {
        "description": "GrandMaster-PRO-MAX | 20k rows\nfiltered to ≤1500 tokens",
        "stages": [{"name": "sft", "method": "sft", "data": "data/grandmaster"}],
        "mode": "verdict",
        "prefs": {"p1": (1, 1), "p2": (1, 0.5), "p3": (0, 0), "p4": (0.5, 0.5), "p5": (1, 1), "p6": (0, 0.5),
                  "p7": (None, None), "p8": (1, 0)},
        "tokens": {"p1": 420, "p2": 150, "p3": 700, "p4": 300, "p5": 380, "p6": 260, "p7": 900, "p8": 640},
    },
    "sft-simpo": {
        "description": "GrandMaster-PRO-MAX SFT, then SimPO on saiga_preferences",
        "stages": [{"name": "sft", "method": "sft", "data": "data/grandmaster"},
                   {"name": "simpo", "method": "simpo", "data": "data/saiga_prefs"}],
        "mode": "logprob",
        "prefs": {"p1": (0.92, 0.88), "p2": (0.81, 0.7), "p3": (0.35, 0.2), "p4": (0.55, 0.45),
                  "p5": (0.97, 0.9), "p6": (0.75, 0.66), "p7": (0.6, 0.8), "p8": (0.1, 0.15)},
        "tokens": {"p1": 520, "p2": 240, "p3": 810, "p4": 450, "p5": 500, "p6": 430, "p7": 980, "p8": 760},
    },
    "sft-dpo": {  # no judge/ folder: must show as "not judged"
        "description": "saiga_scored SFT, then DPO",
        "stages": [{"name": "sft", "method": "sft", "data": "data/saiga"},
                   {"name": "dpo", "method": "dpo", "data": "data/saiga_prefs"}],
        "mode": None,
        "prefs": {},
        "tokens": {"p1": 350, "p2": 90, "p3": 600, "p4": 220, "p5": 300, "p6": 200, "p7": 700, "p8": 500},
    },
}


def _text(pid: str, who: str, tokens: int) -> str:
    body = f"{who}: ответ на вопрос {pid}. " + "Это предложение повторяется для длины. " * max(1, tokens // 40)
    return body.strip()


def _answer_row(pid: str, answer: str, tokens: int, model: str) -> dict:
    return {"id": pid, "prompt": [{"role": "user", "content": PROMPTS[pid]}], "category": CATEGORIES[pid],
            "answer": answer, "answer_tokens": tokens, "tokenizer": "fixture", "finish_reason": "stop",
            "generator": {"backend": "hf", "model": model, "adapter": None},
            "params": {"max_new_tokens": 1024, "temperature": 0.0, "top_p": 1.0, "seed": 0}}


def _judgment(pid: str, order: str, pref: float | None, mode: str) -> dict:
    if pref is None:
        return {"id": pid, "order": order, "mode": mode, "preference": None, "verdict": None, "probs": None,
                "criteria": None, "raw": "Ответ судьи без вердикта", "error": "could not parse a verdict",
                "cached": False, "usage": {"prompt_tokens": 900, "completion_tokens": 40}}
    verdict = "model" if pref > 0.5 else "reference" if pref < 0.5 else "tie"
    # Slot A holds the model answer in model_first order, the reference in reference_first.
    p_a = pref if order == "model_first" else 1 - pref
    probs = {"A": round(p_a * 0.9, 4), "B": round((1 - p_a) * 0.9, 4), "tie": 0.1} if mode == "logprob" else None
    raw = f"[[{'A' if (verdict == 'model') == (order == 'model_first') else 'B'}]] <i>reasoning</i> </script>"
    return {"id": pid, "order": order, "mode": mode, "preference": pref, "verdict": verdict, "probs": probs,
            "criteria": None, "raw": raw, "error": None, "cached": False,
            "usage": {"prompt_tokens": 900, "completion_tokens": 40}}


def write_reference(root: Path) -> Path:
    path = root / "reference" / "answers.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [_answer_row(pid, _text(pid, "Эталон", REFERENCE_TOKENS[pid]), REFERENCE_TOKENS[pid], "reference")
            for pid in PROMPTS]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_run(root: Path, name: str, reference: Path, *, relative_reference: bool = False) -> Path:
    spec = RUNS[name]
    folder = root / name
    (folder).mkdir(parents=True, exist_ok=True)
    answers = {pid: _answer_row(pid, XSS_ANSWER if (name, pid) == ("sft-grandmaster", "p3")
                                else _text(pid, name, spec["tokens"][pid]), spec["tokens"][pid], name)
               for pid in PROMPTS}
    (folder / "answers.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in answers.values()), encoding="utf-8")
    judge = {"name": "fixture-judge", "model": "fixture-judge-model", "mode": spec["mode"], "template_version": 1}
    if spec["mode"]:
        judgments = [_judgment(pid, order, pref, spec["mode"]) for pid, pair in spec["prefs"].items()
                     for order, pref in zip(("model_first", "reference_first"), pair)]
        (folder / "judge").mkdir(exist_ok=True)
        (folder / "judge" / "judgments.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in judgments), encoding="utf-8")
        refs = {r.id: r for r in read_answers(reference)}
        score = compute_score([Judgment(**j) for j in judgments],
                              {pid: AnswerRecord(**row) for pid, row in answers.items()}, refs, target=540, n_boot=300)
        score.judge = JudgeInfo(**judge)
        (folder / "judge" / "score.json").write_text(json.dumps(score.dump(), ensure_ascii=False), encoding="utf-8")
    ref_path = Path("..") / "reference" / "answers.jsonl" if relative_reference else reference
    run = {"name": name, "description": spec["description"], "model": "fixture-base", "stages": spec["stages"],
           "reference_answers": str(ref_path), "target": 540, "judge": judge, "config_hash": "fixture"}
    (folder / "run.json").write_text(json.dumps(run, ensure_ascii=False), encoding="utf-8")
    return folder


def write_fake_runs(root: Path) -> list[Path]:
    """Three run folders under `root` (two judged, one not judged) sharing one reference answers file."""
    reference = write_reference(root)
    return [write_run(root, "sft-grandmaster", reference, relative_reference=True),
            write_run(root, "sft-simpo", reference),
            write_run(root, "sft-dpo", reference)]
