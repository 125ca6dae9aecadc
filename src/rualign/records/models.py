"""The hand-off record models (see rualign.records for the files they are)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
    verdict_mass: float | None = Field(None, description="logprob mode: probability on the verdict letters A/B/C "
                                                         "(pointwise: on the score digits)")
    criteria: dict[str, Any] | None = None
    scores: dict[str, float] | None = Field(None, description='pointwise mode: {"model", "reference"} 1-9 scores')
    raw: str = Field("", description="the judge's raw answer (or its top logprobs as JSON)")
    error: str | None = None
    cached: bool = False
    identical: bool = Field(False, description="both answers the same text: a tie, never sent to the judge")
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
    n: Count = Field(0, description="pairs judged in both orders")
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
