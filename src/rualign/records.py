"""The files stages hand to each other, as typed records: one model, one reader and one writer per file.

  answers.jsonl    AnswerRecord   read_answers / write_answers (the resumable work file appends the same record)
  judgments.jsonl  Judgment       read_judgments / write_judgments
  score.json       Score          read_score / write_score
  run.json         RunInfo        read_run_info / write_run_info
  ref_loss.json    RefLoss        read_ref_loss / write_ref_loss
  knowledge.json   KnowledgeResult read_knowledge / write_knowledge
  judge_card.json  JudgeCard      read_judge_card / write_judge_card (Score.judge_card carries its JudgeStatus)
  manifest.json    Manifest       runs.read_manifest / runs.write_manifest (it guards every stage, so it lives there)

Every record carries `version` (default 1: files written before it existed still load) and keeps keys it does
not know (extra="allow"), so a file written by a newer rualign or enriched by a user survives a round trip.
docs/formats.md's record tables are generated from these models (`python -m rualign.records docs/formats.md`,
checked by a test).
Adding a field is one line here; for Score, the field's `report=` says where the report shows it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rualign.errors import DataError, RualignError
from rualign.textio import iter_jsonl, read_utf8

VERSION = 1
DEFAULT_TARGET = 540  # the study's target mean answer length, in tokens
ORDERS = ("model_first", "reference_first")


class Record(BaseModel):
    """A hand-off record: typed fields, unknown keys kept, a format version."""

    model_config = ConfigDict(extra="allow")
    version: int = Field(VERSION, description="format version; files without it are version 1",
                         json_schema_extra={"report": "not shown: format version"})

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value > VERSION:
            raise ValueError(f"format version {value} is newer than this rualign reads ({VERSION}); upgrade rualign")
        return value

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Part(BaseModel):
    """A nested part of a record (no version of its own)."""

    model_config = ConfigDict(extra="allow")


# Numbers the report shows or plots: finite (the JSON reader refuses NaN/Infinity) and in range, so a string
# score cannot crash a plot and a 2403 is never shown as if real.
Count = Annotated[int, Field(strict=True, ge=0)]
Points = Annotated[float, Field(strict=True, ge=0, le=100)]
Rate = Annotated[float, Field(strict=True, ge=0, le=1)]


def _ident(value: Any) -> Any:
    # Ids are strings everywhere; integer ids from user files are accepted and read as strings.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


# ---------------------------------------------------------------- answers.jsonl

class Message(Part):
    """One chat turn, as answers.jsonl and the chat templates write it."""

    role: str = Field(description='"system" | "user" | "assistant"')
    content: str


class GeneratorInfo(Part):
    backend: str | None = None
    model: str | None = None
    adapter: str | None = None


class AnswerRecord(Record):
    """One line of answers.jsonl: a prompt and the model's answer to it."""

    id: str
    prompt: list[Message] = Field(default_factory=list, description="the conversation answered: [{role, content}, ...]")
    category: str | None = None
    answer: str
    answer_tokens: Count | None = Field(None, description="answer length in the named `tokenizer`")
    tokenizer: str | None = None
    finish_reason: str | None = Field(None, description='"stop" | "length" | what a server reports')
    generator: GeneratorInfo | None = None
    params: dict[str, Any] | None = Field(None, description="every setting that can change the answer "
                                                             "(max_new_tokens, temperature, top_p, seed, backend's)")

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> Any:
        return _ident(value)

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_messages(cls, value: Any) -> Any:
        return [{"role": "user", "content": value}] if isinstance(value, str) else value


# ---------------------------------------------------------------- judgments.jsonl

class Usage(Part):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Judgment(Record):
    """One judge call (one prompt in one answer order); failures are rows too, with `error` set."""

    id: str
    order: Literal["model_first", "reference_first"]
    mode: str | None = Field(None, description='"logprob" | "constrained" | "verdict" | "pointwise" | "identical" (no call made)')
    preference: Rate | None = Field(None, description="preference for the MODEL answer in [0, 1]; null = failure")
    verdict: Literal["model", "reference", "tie"] | None = None
    probs: dict[str, float] | None = Field(None, description='{"A", "B", "tie"} slot probabilities')
    verdict_mass: float | None = Field(None, description="logprob mode: probability mass on the verdict letters")
    criteria: dict[str, Any] | None = None
    scores: dict[str, float] | None = Field(None, description='pointwise mode: {"model", "reference"} 1-9 scores')
    raw: str = Field("", description="the judge's raw answer (or its top logprobs as JSON)")
    error: str | None = None
    cached: bool = False
    identical: bool = Field(False, description="both answers the same text: a tie, never sent to the judge")
    verdict_mass: float | None = Field(None, description="logprob mode: probability on the verdict letters A/B/C")
    usage: Usage = Field(default_factory=Usage)

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> Any:
        return _ident(value)


# ---------------------------------------------------------------- score.json

def shown(default: Any = None, **kwargs: Any) -> Any:
    """A Score field results.csv shows in a column of the same name (a scalar, or a part's `count`)."""
    return Field(default, json_schema_extra={"report": "csv"}, **kwargs)


def elsewhere(default: Any, where: str, **kwargs: Any) -> Any:
    """A Score field that is not a results.csv column; `where` says where the report uses it, or why not."""
    return Field(default, json_schema_extra={"report": where}, **kwargs)


class IdList(Part):
    count: int = 0
    ids: list[str] = Field(default_factory=list)


class Failures(IdList):
    reasons: dict[str, str] = Field(default_factory=dict)


class CategoryScore(Part):
    score: Points | None = None
    ci_low: Points | None = None
    ci_high: Points | None = None
    n: Count = 0


class LengthStats(Part):
    mean: Annotated[float, Field(strict=True, ge=0)] | None = None
    median: Annotated[float, Field(strict=True, ge=0)] | None = None
    p90: Annotated[float, Field(strict=True, ge=0)] | None = None
    gap_to_target: float | None = None
    n: Count = 0

    @classmethod
    def of(cls, tokens: list[int], target: int) -> "LengthStats":
        """From answer lengths, by the one length_stats (data/tokens.py) that data manifests use too."""
        from rualign.data.tokens import length_stats

        stats = length_stats(tokens, target)
        return cls(**{k: stats[k] for k in cls.model_fields if k in stats})


class Lengths(Part):
    target: int = DEFAULT_TARGET
    model: LengthStats = Field(default_factory=LengthStats)
    reference: LengthStats = Field(default_factory=LengthStats)


class JudgeInfo(Part):
    name: str | None = None
    model: str | None = None
    mode: str | None = Field(None, description='modes the judge ran in, "+"-joined; "identical" if no call')
    template_version: str | int | None = None


class PromptValue(Part):
    id: str
    category: str | None = None
    value: Rate | None = Field(None, description="0..1, mean of the successful orders; null = failure")
    orders: Count = 0
    identical: bool = False
    model_tokens: Count | None = None
    reference_tokens: Count | None = None


class JudgeStatus(Part):
    """What a score carries about its judge: the filed judge card's verdict, made unvalidated by the run's own
    verdict mass too (judge.judge_status)."""

    status: Literal["validated", "unvalidated", "unchecked"] = Field(
        ..., description='"unchecked": no judge card filed for this judge (`rualign judge-check`)')
    reasons: list[str] = Field(default_factory=list, description="why it is not validated")
    accuracy: Rate | None = None
    ci_low: Rate | None = None
    ci_high: Rate | None = None
    verdict_mass: Rate | None = None
    first_slot_rate: Rate | None = None
    gold: str | None = Field(None, description="the gold set's name")
    key: str | None = Field(None, description="the judge key the card was filed under")


class Score(Record):
    """The judge stage's result for one model against one reference (DESIGN "Evaluation, precisely")."""

    score: Points | None = shown(..., description="0..100; the reference against itself is 50")
    ci_low: Points | None = shown(...)
    ci_high: Points | None = shown(...)
    ci_level: Rate = elsewhere(0.95, "report text (95% CI)")
    lc_score: Points | None = shown(None, description="length-controlled score")
    n: Count = shown(..., description="prompts scored")
    n_prompts: Count | None = shown(None, description="prompts given")
    failures: Failures = shown(Failures(), description="judge/parse failures: never dropped, never losses")
    partial: IdList = elsewhere(IdList(), "not shown: prompts scored from one order (already in n)")
    wins: Count | None = shown()
    ties: Count | None = shown()
    losses: Count | None = shown()
    identical_pairs: IdList | None = shown(None, description="scored ½ without a judge call; in ties")
    tie_rate: Rate | None = shown()
    order_flip_rate: Rate | None = shown(None, description="judged prompts whose two orders name opposite winners")
    first_slot_win_rate: Rate | None = shown(None, description="mean preference for slot A over judge calls")
    verdict_mass: Rate | None = shown(None, description="mean probability the judge put on the verdict letters "
                                                        "(logprob calls; < 0.5 = unvalidated)")
    criteria: dict[str, Points | None] | None = elsewhere(
        None, "results.csv win_<criterion> columns and report: verdict-mode win rate per criterion, 0..100")
    judge_card: JudgeStatus | None = elsewhere(
        None, "results.csv judge_status; report.md, report.html and the terminal mark unvalidated scores")
    lc_warning: str | None = shown()
    per_category: dict[str, CategoryScore] = elsewhere({}, "report.html per-category table")
    lengths: Lengths | None = elsewhere(None, "results.csv mean_tokens, median_tokens, p90_tokens")
    judge: JudgeInfo | None = elsewhere(None, "results.csv judge (model, else name)")
    tie_eps: Annotated[float, Field(ge=0, lt=0.5)] | None = elsewhere(
        None, "answer browser outcome band (stats.TIE_EPS when absent)")
    n_boot: int | None = elsewhere(None, "not shown: reproducibility")
    seed: int | None = elsewhere(None, "not shown: reproducibility")
    per_prompt: list[PromptValue] = elsewhere(..., "answer browser and plots; `rualign compare`")

    @model_validator(mode="after")
    def _ci_around_score(self) -> "Score":
        if None not in (self.ci_low, self.score, self.ci_high) and not self.ci_low <= self.score <= self.ci_high:
            raise ValueError(f"ci_low {self.ci_low}, score {self.score}, ci_high {self.ci_high} are not in order "
                             "(expected ci_low <= score <= ci_high)")
        return self


# ---------------------------------------------------------------- judge_card.json

class CardAccuracy(Part):
    accuracy: Rate | None = Field(None, description="mean preference for the better answer; null = none judged")
    ci_low: Rate | None = None
    ci_high: Rate | None = None
    n: Count = 0


class LengthBias(Part):
    chosen_shorter: CardAccuracy = Field(default_factory=CardAccuracy,
                                         description="pairs whose better answer is the shorter one")
    chosen_longer: CardAccuracy = Field(default_factory=CardAccuracy)
    gap: float | None = Field(None, description="accuracy longer - shorter: > 0 a judge that likes length")


class CardJudge(Part):
    name: str | None = None
    mode: str | None = None
    template_version: str | int | None = None
    key: str | None = Field(None, description="the judge key (eval/judge_check.judge_key)")
    config: dict[str, Any] | None = Field(None, description="the judge's public configuration (no keys)")


class CardGold(Part):
    name: str | None = Field(None, description="bundled:NAME or the file given")
    path: str | None = None
    hash: str | None = None


class JudgeCard(Record):
    """judge_card.json of `rualign judge-check` (also filed as $RUALIGN_HOME/judge_cards/<judge key>.json): how
    a judge does on gold pairs whose better answer is known (eval/judge_card.py says how each number is made)."""

    accuracy: Rate | None = Field(None, description="mean preference for the better answer (0.5 = chance)")
    ci_low: Rate | None = None
    ci_high: Rate | None = None
    n: Count = Field(0, description="pairs judged")
    n_pairs: Count = Field(0, description="pairs in the gold set")
    failed_pairs: Count = 0
    first_slot_rate: Rate | None = Field(None, description="preference for slot A (0.5 = no position bias)")
    order_flip_rate: Rate | None = None
    tie_rate: Rate | None = None
    verdict_mass: Rate | None = Field(None, description="logprob mode: mean probability on the verdict letters")
    length_bias: LengthBias = Field(default_factory=LengthBias)
    per_category: dict[str, CardAccuracy] = Field(default_factory=dict)
    validated: bool = False
    reasons: list[str] = Field(default_factory=list, description="why it is not validated")
    judge: CardJudge = Field(default_factory=CardJudge)
    gold: CardGold = Field(default_factory=CardGold)


# ---------------------------------------------------------------- run.json

class StageInfo(Part):
    name: str | None = None
    method: str | None = None
    data: str | None = Field(None, description="training data, human-readable")


class RunInfo(Record):
    """run.json: what one experiment run folder holds; written last by the pipeline."""

    name: str | None = Field(None, description="defaults to the folder name")
    description: str = Field("", description="training data, human-readable")
    model: str | None = None
    stages: list[StageInfo] = Field(default_factory=list)
    reference_answers: str | None = Field(None, description="path to the reference answers.jsonl (relative: to "
                                                            "the run folder)")
    target: int | None = DEFAULT_TARGET
    judge: dict[str, Any] | None = None
    config_hash: str | None = None
    store: dict[str, str] | None = None


# ---------------------------------------------------------------- ref_loss.json

class RefLoss(Record):
    """ref_loss.json of an answers stage / run folder: the model's loss on held-out reference answers."""

    ref_loss: float | None = Field(None, description="mean token cross-entropy on held-out assistant turns")
    tokens: int = 0
    conversations: int = 0
    heldout: str | None = Field(None, description="where the held-out conversations came from")
    limit: int | None = None


class KnowledgeScore(Part):
    accuracy: float = Field(ge=0, le=1, description="share of questions whose highest-log-likelihood choice is right")
    ci_low: float | None = None
    ci_high: float | None = None
    accuracy_norm: float = Field(ge=0, le=1, description="the same with log-likelihood per character of the choice")
    ci_low_norm: float | None = None
    ci_high_norm: float | None = None
    n: int = Field(ge=1, description="questions")


class KnowledgeResult(Record):
    """knowledge.json of `rualign knowledge` / eval.knowledge: multiple-choice accuracy (fractions; the report's
    `knowledge` column is 100 x accuracy). CIs: percentile bootstrap over questions, 95%."""

    model: str | None = None
    questions: str | None = Field(None, description="the questions file or bundled:NAME")
    questions_hash: str | None = None
    style: Literal["plain", "chat"] = "plain"
    autocast: str | None = Field(None, description="bf16 when scored under CPU bf16 autocast")
    accuracy: float = Field(ge=0, le=1)
    ci_low: float | None = None
    ci_high: float | None = None
    accuracy_norm: float = Field(ge=0, le=1)
    ci_low_norm: float | None = None
    ci_high_norm: float | None = None
    n: int = Field(ge=1)
    chance: float | None = Field(None, description="mean of 1 / number of choices")
    per_category: dict[str, KnowledgeScore] = Field(default_factory=dict)
    predictions: list[dict[str, Any]] = Field(
        default_factory=list, description='per question: {"id", "category", "answer", "pred", "pred_norm", '
                                          '"correct", "correct_norm", "logprobs": [one per choice]}')
    seconds: float | None = None


# ---------------------------------------------------------------- readers and writers

def _problem(exc: ValidationError, what: str) -> str:
    missing = [".".join(map(str, e["loc"])) for e in exc.errors() if e["type"] == "missing"]
    if missing:
        return f"{what} lacks {', '.join(missing)}"
    first = exc.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    return f"{what}: '{'.'.join(map(str, first['loc']))}': {message}" if first["loc"] else f"{what}: {message}"


def validated(model: type[Record], data: Any, *, path: str | Path, line: int | None = None, what: str,
              expected: str) -> Any:
    """`model` from parsed JSON, or a DataError naming the file, the line and the field."""
    if not isinstance(data, dict):
        raise DataError(f"{what} is not a JSON object", path=path, line=line, expected=expected)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise DataError(_problem(exc, what), path=path, line=line, expected=expected) from None


def _read_json(path: Path, expected: str) -> Any:
    from rualign.textio import read_json

    return read_json(path, expected=expected)  # NaN/Infinity and non-UTF-8 are DataErrors naming the file


def _check_answer_row(path: Path, number: int, row: Any, require_prompt: bool) -> None:
    if not isinstance(row, dict) or "id" not in row or not isinstance(row.get("answer"), str):
        raise DataError("answer record lacks 'id' or a string 'answer'", path=path, line=number,
                        expected='{"id": str, "prompt": [messages], "answer": str, ...}')
    prompt = row.get("prompt")
    if prompt is None and not require_prompt:
        return
    if not (isinstance(prompt, str) or (isinstance(prompt, list) and prompt and all(isinstance(m, dict)
                                                                                  for m in prompt))):
        raise DataError(f"record '{row['id']}' has no prompt messages", path=path, line=number,
                        expected="'prompt': [{'role': 'user', 'content': ...}]")


def read_answers(path: str | Path, *, strict: bool = True, require_prompt: bool = True) -> list[AnswerRecord]:
    """answers.jsonl in file order (a UTF-8 BOM tolerated). strict: a bad row, a duplicate id or an empty file is
    a DataError naming file and line; not strict (resuming a work file): bad rows are skipped, later lines win.
    The judge needs every prompt; the report can show answers without one (require_prompt=False)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("answers file not found", path=path)
    expected = "one answer record per line (docs/formats.md)"
    records: dict[str, AnswerRecord] = {}
    lines: dict[str, int] = {}
    for number, row in iter_jsonl(path, read_utf8(path), expected=expected):
        try:
            _check_answer_row(path, number, row, require_prompt)
            record = validated(AnswerRecord, row, path=path, line=number, what="answer record", expected=expected)
        except DataError:
            if strict:
                raise
            continue
        if strict and record.id in records:
            raise DataError(f"duplicate id '{record.id}' (first on line {lines[record.id]})", path=path,
                            line=number, expected="each id once")
        records.pop(record.id, None)  # not strict: the later line wins, in its own place
        records[record.id], lines[record.id] = record, number
    if strict and not records:
        raise DataError("no answer records", path=path, expected="at least one line")
    return list(records.values())


def write_answers(path: str | Path, records: Iterable[AnswerRecord]) -> int:
    from rualign.runs import write_jsonl

    return write_jsonl(path, (r.dump() for r in records))


def read_judgments(path: str | Path) -> list[Judgment]:
    path = Path(path)
    expected = "judgments.jsonl of docs/formats.md"
    return [validated(Judgment, row, path=path, line=number, what="judgment", expected=expected)
            for number, row in iter_jsonl(path, read_utf8(path), expected=expected)]


def write_judgments(path: str | Path, rows: Iterable[Judgment]) -> int:
    from rualign.runs import write_jsonl

    return write_jsonl(path, (r.dump() for r in rows))


def _check_per_prompt(path: Path, data: dict) -> None:
    # Checked before validation so the message names the entry a person would look for.
    entries = data.get("per_prompt")
    if not isinstance(entries, list):
        return
    for row, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or "id" not in entry:
            raise DataError(f"per_prompt entry {row} has no id", path=path)
        value = entry.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0.0 <= value <= 1.0):
            raise DataError(f"per_prompt entry {row} ('{entry['id']}') has value {value!r}", path=path,
                            expected="a number in [0, 1] or null")


def read_score(path: str | Path) -> Score:
    """score.json, given the file or the folder holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / "score.json"
    if not path.is_file():
        raise RualignError("no score.json here", path=path, hint="point at a `rualign judge --out` folder")
    expected = "score.json of docs/formats.md"
    data = _read_json(path, expected)
    if isinstance(data, dict):
        _check_per_prompt(path, data)
    return validated(Score, data, path=path, what="score.json", expected=expected)


def write_score(path: str | Path, score: Score) -> None:
    from rualign.runs import write_json

    write_json(path, score.dump())


def read_ref_loss(path: str | Path) -> RefLoss:
    path = Path(path)
    return validated(RefLoss, _read_json(path, "ref_loss.json of docs/formats.md"), path=path, what="ref_loss.json",
                     expected='{"ref_loss": float, "tokens": int, ...}')


def write_ref_loss(path: str | Path, record: RefLoss) -> None:
    from rualign.runs import write_json

    write_json(path, record.dump())


def read_knowledge(path: str | Path) -> KnowledgeResult:
    path = Path(path)
    return validated(KnowledgeResult, _read_json(path, "knowledge.json of docs/formats.md"), path=path,
                     what="knowledge.json", expected='{"accuracy", "accuracy_norm", "n", "per_category", ...}')


def write_knowledge(path: str | Path, record: KnowledgeResult) -> None:
    from rualign.runs import write_json

    write_json(path, record.dump())


def read_judge_card(path: str | Path) -> JudgeCard:
    path = Path(path)
    return validated(JudgeCard, _read_json(path, "judge_card.json of docs/formats.md"), path=path,
                     what="judge_card.json", expected='{"accuracy", "validated", "reasons", "judge", "gold", ...}')


def write_judge_card(path: str | Path, card: JudgeCard) -> None:
    from rualign.runs import write_json

    write_json(path, card.dump())


def read_run_info(path: str | Path) -> RunInfo:
    path = Path(path)
    return validated(RunInfo, _read_json(path, "run.json of docs/formats.md"), path=path, what="run.json",
                     expected='{"name", "description", "stages": [{"name", "method", "data"}], ...}')


def write_run_info(path: str | Path, info: RunInfo) -> None:
    from rualign.runs import write_json

    write_json(path, info.dump())


# ---------------------------------------------------------------- docs/formats.md, generated from the models

DOCUMENTED: dict[str, type[BaseModel]] = {"answers.jsonl (one line per prompt)": AnswerRecord,
                                          "judgments.jsonl (one line per prompt and answer order)": Judgment,
                                          "score.json": Score, "run.json": RunInfo, "ref_loss.json": RefLoss,
                                          "knowledge.json": KnowledgeResult, "judge_card.json": JudgeCard}
DOCS_BEGIN = "<!-- records: generated by `python -m rualign.records docs/formats.md`, do not edit -->"
DOCS_END = "<!-- records: end -->"


def _type_name(annotation: Any) -> str:
    """A field's type as people read it: `float (0..100)`, `int (>= 0) | null`, `"a" | "b"`."""
    return _type_text(annotation).replace("|", "\\|")


def _type_text(annotation: Any) -> str:
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Annotated:
        bounds = [f"{op} {getattr(m, attr)}" for m in args[1].metadata if not isinstance(args[1], type)
                  for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if hasattr(m, attr)]
        return _type_text(args[0]) + (f" ({', '.join(bounds)})" if bounds else "")
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_text(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_text(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _default(info: Any) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        return json.dumps(info.default_factory() if info.default_factory in (list, dict) else
                          info.default_factory().model_dump(mode="json"))
    value = info.default.model_dump(mode="json") if isinstance(info.default, BaseModel) else info.default
    return json.dumps(value, ensure_ascii=False).replace("|", "\\|")


def _model_table(model: type[BaseModel], prefix: str = "") -> list[str]:
    rows, parts = [], []
    for name, info in model.model_fields.items():
        default = _default(info)
        note = (info.description or "").replace("|", "\\|")
        where = (info.json_schema_extra or {}).get("report") if isinstance(info.json_schema_extra, dict) else None
        if where:
            note = (note + "; " if note else "") + ("results.csv column" if where == "csv" else where)
        rows.append(f"| `{prefix}{name}` | {_type_name(info.annotation)} | {default} | {note} |")
        for inner in _parts(info.annotation):
            parts.append((f"{prefix}{name}", inner))
    for name, inner in parts:
        rows += _model_table(inner, prefix=f"{name}.")
    return rows


def _parts(annotation: Any) -> list[type[BaseModel]]:
    from typing import get_args

    found = [annotation] if isinstance(annotation, type) and issubclass(annotation, Part) else []
    for arg in get_args(annotation):
        found += _parts(arg)
    return found


def docs_markdown() -> str:
    lines = [DOCS_BEGIN]
    for title, model in DOCUMENTED.items():
        lines += ["", f"### `{title}`: `{model.__name__}`", "", (model.__doc__ or "").strip(), "",
                  "| field | type | default | notes |", "|---|---|---|---|", *_model_table(model)]
    return "\n".join(lines + ["", DOCS_END])


def refresh_docs(path: str | Path) -> None:
    """Replace the generated section of docs/formats.md (between the markers) with docs_markdown()."""
    text = Path(path).read_text(encoding="utf-8")
    start, end = text.index(DOCS_BEGIN), text.index(DOCS_END) + len(DOCS_END)
    Path(path).write_text(text[:start] + docs_markdown() + text[end:], encoding="utf-8")


if __name__ == "__main__":  # python -m rualign.records [docs/formats.md]: print the tables, or refresh the file
    import sys

    refresh_docs(sys.argv[1]) if len(sys.argv) > 1 else print(docs_markdown())
