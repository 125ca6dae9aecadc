"""`rualign judge-check`: judge gold pairs in both orders through the normal judge path and write a judge card.

Gold pairs are in the `preference` format (prompt / chosen / rejected as strings or message lists, optional
`id` and `category`), `chosen` being the better answer; `bundled:gold_ru` is the set shipped with rualign
(data/samples/gold_ru.jsonl, described in data/samples/README.md).

Every card is also filed under $RUALIGN_HOME/judge_cards/<judge key>.json, the key being a hash of what
decides a judge's verdicts (backend, model, endpoint, mode, template, sampling). `rualign judge` and
`rualign report` look a judge's card up there, so the card travels with every score that judge produces.
"""

from __future__ import annotations

from pathlib import Path

from rualign.errors import DataError
from rualign.eval import judge_card
from rualign.eval.schema import JudgeConfig
from rualign.records import AnswerRecord, write_judgments
from rualign.runs import file_hash, read_jsonl, rualign_home, stable_hash, write_json, write_manifest, \
    write_text

BUNDLED_PREFIX = "bundled:"
_SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"


def gold_path(spec: str) -> Path:
    if spec.startswith(BUNDLED_PREFIX):
        name = spec[len(BUNDLED_PREFIX):]
        path = _SAMPLES / f"{name}.jsonl"
        if not name.isidentifier() or not path.is_file():
            raise DataError(f"unknown bundled gold set '{name}'", expected="bundled:gold_ru or a JSONL file")
        return path
    path = Path(spec)
    if not path.is_file():
        raise DataError("gold file not found", path=path, expected="a preference-format JSONL file or bundled:gold_ru")
    return path


def _text(value, field: str, path: Path, number: int) -> str:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        return "\n\n".join(str(m.get("content", "")) for m in value if m.get("role") == "assistant")
    raise DataError(f"gold pair {number}: '{field}' is not a non-empty string or message list", path=path,
                    expected="preference format: prompt / chosen / rejected")


def _messages(value, path: Path, number: int) -> list[dict]:
    if isinstance(value, str) and value.strip():
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        return [{"role": str(m.get("role", "user")), "content": str(m["content"])} for m in value]
    raise DataError(f"gold pair {number}: 'prompt' is not a string or message list", path=path,
                    expected="preference format: prompt / chosen / rejected")


def load_gold(spec: str) -> tuple[Path, list[dict]]:
    path = gold_path(spec)
    pairs, seen = [], set()
    for number, row in enumerate(read_jsonl(path), start=1):
        if not isinstance(row, dict):
            raise DataError(f"gold pair {number} is not a JSON object", path=path)
        pid = str(row.get("id") or f"pair{number}")
        if pid in seen:
            raise DataError(f"duplicate id '{pid}'", path=path, line=number, expected="each id once")
        seen.add(pid)
        pairs.append({"id": pid, "category": row.get("category"), "prompt": _messages(row.get("prompt"), path, number),
                      "chosen": _text(row.get("chosen"), "chosen", path, number),
                      "rejected": _text(row.get("rejected"), "rejected", path, number)})
    if not pairs:
        raise DataError("no gold pairs", path=path, expected="at least one line")
    return path, pairs


def judge_key(cfg: JudgeConfig) -> str:
    return stable_hash(cfg.judge_key())  # the one judge key (plan, judge stage, card registry)


def card_registry() -> Path:
    return rualign_home() / "judge_cards"


def find_card(cfg: JudgeConfig) -> dict | None:
    """The filed card of this judge configuration, if `rualign judge-check` has been run for it."""

    path = card_registry() / f"{judge_key(cfg)}.json"
    if not path.is_file():
        return None
    from rualign.textio import loads

    try:
        return loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None  # an unreadable card (or one with NaN) vouches for nothing


def card_summary(card: dict | None) -> dict:
    """What a score carries about its judge: status 'validated' / 'unvalidated' / 'unchecked'."""
    if card is None:
        return {"status": "unchecked", "reasons": ["no judge card: run `rualign judge-check` for this judge"]}
    return {"status": "validated" if card.get("validated") else "unvalidated", "reasons": card.get("reasons", []),
            "accuracy": card.get("accuracy"), "ci_low": card.get("ci_low"), "ci_high": card.get("ci_high"),
            "verdict_mass": card.get("verdict_mass"), "first_slot_rate": card.get("first_slot_rate"),
            "gold": (card.get("gold") or {}).get("name"), "key": card.get("judge", {}).get("key")}


def run_judge_check(gold: str, cfg: JudgeConfig, out_dir: Path, *, seed: int = 0,
                    cache_path: str | Path | None = None) -> dict:
    from rualign.eval.cache import default_cache_path
    from rualign.eval.judge import _judge_jobs, build_jobs, load_template

    path, pairs = load_gold(gold)
    # The chosen answer plays the model, the rejected one the reference: a good judge prefers the "model".
    model = {p["id"]: AnswerRecord(id=p["id"], prompt=p["prompt"], answer=p["chosen"]) for p in pairs}
    reference = {p["id"]: AnswerRecord(id=p["id"], prompt=p["prompt"], answer=p["rejected"]) for p in pairs}
    template = load_template(cfg.template)
    rows, stats = _judge_jobs(build_jobs(model, reference), cfg, template,
                              Path(cache_path or cfg.cache or default_cache_path()))
    card = judge_card.build_card(rows, pairs, seed=seed)
    card["judge"] = {"name": cfg.display_name(), "mode": cfg.mode, "template_version": template.version,
                     "key": judge_key(cfg), "config": cfg.public()}
    card["gold"] = {"name": gold, "path": str(path), "hash": file_hash(path)}
    out_dir = Path(out_dir)
    write_judgments(out_dir / "judgments.jsonl", rows)
    write_json(out_dir / "judge_card.json", card)
    write_text(out_dir / "judge_card.md", judge_card.markdown(card))
    write_json(card_registry() / f"{judge_key(cfg)}.json", card)
    write_manifest(out_dir, stage="judge-check", config_hash=stable_hash({"gold": card["gold"]["hash"],
                                                                          "judge": card["judge"]["key"]}),
                   judge=cfg.public(), gold=card["gold"], client=stats,
                   files=["judgments.jsonl", "judge_card.json", "judge_card.md"])
    return card
