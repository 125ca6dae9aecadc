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
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator

from rualign.errors import DataError
from rualign.eval import judge_card
from rualign.eval.schema import JudgeConfig
from rualign.records import (AnswerRecord, CardGold, CardJudge, JudgeCard, JudgeStatus, Message, read_judge_card,
                             write_judge_card, write_judgments)
from rualign.runs import file_hash, read_jsonl, rualign_home, stable_hash, write_manifest, write_text

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


_TURNS = TypeAdapter(list[Message])


def _assistant_text(value: Any) -> Any:
    """`chosen` / `rejected`: a non-empty string, or a message list whose assistant turns are the answer."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        try:
            turns = _TURNS.validate_python(value)
        except ValidationError:
            raise ValueError("is not a non-empty string or message list") from None
        return "\n\n".join(m.content for m in turns if m.role == "assistant")
    raise ValueError("is not a non-empty string or message list")


class GoldPair(BaseModel):
    """One gold pair of the preference format: `chosen` is the better answer to `prompt`."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field("", validate_default=True, description="default: pair<line number>")
    category: str | None = None
    # Checked even when absent, so a missing field gets the same message as a malformed one.
    prompt: list[Message] = Field(None, validate_default=True)
    chosen: str = Field(None, validate_default=True)
    rejected: str = Field(None, validate_default=True)

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip():
            return [Message(role="user", content=value)]
        if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
            # A turn without a role is the user's; contents are read as text.
            return [Message(role=str(m.get("role", "user")), content=str(m["content"])) for m in value]
        raise ValueError("is not a string or message list")

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: Any, info: ValidationInfo) -> str:
        return str(value) if value else f"pair{info.context['line']}"  # none or empty: named by its line

    @field_validator("chosen", "rejected", mode="before")
    @classmethod
    def _answer(cls, value: Any) -> Any:
        return _assistant_text(value)


def _gold_pair(row: Any, path: Path, number: int) -> GoldPair:
    if not isinstance(row, dict):
        raise DataError(f"gold pair {number} is not a JSON object", path=path)
    try:
        return GoldPair.model_validate(row, context={"line": number})
    except ValidationError as exc:
        first = exc.errors()[0]
        field, why = first["loc"][0], first["msg"].removeprefix("Value error, ")
        raise DataError(f"gold pair {number}: '{field}' {why}", path=path,
                        expected="preference format: prompt / chosen / rejected") from None


def load_gold(spec: str) -> tuple[Path, list[GoldPair]]:
    path = gold_path(spec)
    pairs, seen = [], set()
    for number, row in enumerate(read_jsonl(path), start=1):
        pair = _gold_pair(row, path, number)
        if pair.id in seen:
            raise DataError(f"duplicate id '{pair.id}'", path=path, line=number, expected="each id once")
        seen.add(pair.id)
        pairs.append(pair)
    if not pairs:
        raise DataError("no gold pairs", path=path, expected="at least one line")
    return path, pairs


def judge_key(cfg: JudgeConfig) -> str:
    return stable_hash(cfg.judge_key())  # the one judge key (plan, judge stage, card registry)


def card_registry() -> Path:
    return rualign_home() / "judge_cards"


def find_card(cfg: JudgeConfig) -> JudgeCard | None:
    """The filed card of this judge configuration, if `rualign judge-check` has been run for it."""
    path = card_registry() / f"{judge_key(cfg)}.json"
    if not path.is_file():
        return None
    try:
        return read_judge_card(path)
    except DataError:
        return None  # an unreadable card (or one with NaN) vouches for nothing


def card_summary(card: JudgeCard | None) -> JudgeStatus:
    """What a score carries about its judge: status 'validated' / 'unvalidated' / 'unchecked'."""
    if card is None:
        return JudgeStatus(status="unchecked", reasons=["no judge card: run `rualign judge-check` for this judge"])
    return JudgeStatus(status="validated" if card.validated else "unvalidated", reasons=card.reasons,
                       accuracy=card.accuracy, ci_low=card.ci_low, ci_high=card.ci_high,
                       verdict_mass=card.verdict_mass, first_slot_rate=card.first_slot_rate, gold=card.gold.name,
                       key=card.judge.key)


def run_judge_check(gold: str, cfg: JudgeConfig, out_dir: Path, *, seed: int = 0,
                    cache_path: str | Path | None = None) -> JudgeCard:
    from rualign.eval.cache import default_cache_path
    from rualign.eval.judge import _judge_jobs, build_jobs, template_for

    path, pairs = load_gold(gold)
    # The chosen answer plays the model, the rejected one the reference: a good judge prefers the "model".
    model = {p.id: AnswerRecord(id=p.id, prompt=p.prompt, answer=p.chosen) for p in pairs}
    reference = {p.id: AnswerRecord(id=p.id, prompt=p.prompt, answer=p.rejected) for p in pairs}
    template = template_for(cfg)
    rows, stats = _judge_jobs(build_jobs(model, reference), cfg, template,
                              Path(cache_path or cfg.cache or default_cache_path()))
    card = judge_card.build_card(rows, pairs, seed=seed)
    card.judge = CardJudge(name=cfg.display_name(), mode=cfg.mode, template_version=template.version,
                           key=judge_key(cfg), config=cfg.public())
    card.gold = CardGold(name=gold, path=str(path), hash=file_hash(path))
    out_dir = Path(out_dir)
    write_judgments(out_dir / "judgments.jsonl", rows)
    write_judge_card(out_dir / "judge_card.json", card)
    write_text(out_dir / "judge_card.md", judge_card.markdown(card))
    write_judge_card(card_registry() / f"{judge_key(cfg)}.json", card)
    write_manifest(out_dir, stage="judge-check", config_hash=stable_hash({"gold": card.gold.hash,
                                                                          "judge": card.judge.key}),
                   judge=cfg.public(), gold=card.gold.model_dump(mode="json"), client=stats,
                   files=["judgments.jsonl", "judge_card.json", "judge_card.md"])
    return card
