"""Pairwise judging: every prompt twice (model answer as A, then as B), logprob or parsed verdicts.

Outputs (docs/formats.md): DIR/judgments.jsonl (one row per order, failures included with `error` set),
DIR/score.json (stats.compute_score + "judge"), DIR/manifest.json last. Every successful judge call is
cached in SQLite the moment it returns, so an interrupted run resumes without repeating finished calls.

A prompt whose two answers are the same text (after strip) is never sent to the judge: queried in both
orders, any judge gives it exactly ½ (order 1 scores P(A) + P(tie)/2, order 2 P(B) + P(tie)/2 with the
same probabilities, mean ½), so both its rows are written as ties with `"identical": true` and no call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


from rualign.config import parse_yaml_text
from rualign.errors import DataError, RualignError
from rualign.eval import parse, tokenizer_id
from rualign.eval.cache import JudgeCache, cache_key, default_cache_path
from rualign.eval.client import CallFailed
from rualign.eval.judge_backends import backend_factory, request_params
from rualign.eval.judge_reply import JudgeReply, checked_value
from rualign.eval.pointwise import POINTWISE_KEYS, PointwiseTemplate, judge_pointwise
from rualign.eval.schema import JudgeConfig
from rualign.records import (DEFAULT_TARGET, AnswerRecord, JudgeInfo, JudgeStatus, Judgment, Message, Score, Usage,
                             read_answers, read_score, write_judgments, write_score)
from rualign.textio import read_utf8
from rualign.runs import MANIFEST, file_hash, is_finished, read_manifest, stable_hash, write_manifest

log = logging.getLogger(__name__)
ORDERS = ("model_first", "reference_first")
_TEMPLATE_KEYS = ("version", "system", "body", "logprob_instruction", "verdict_instruction", "reminder")


@dataclass(frozen=True)
class Template:
    version: str
    system: str
    body: str
    logprob_instruction: str
    verdict_instruction: str
    reminder: str


def load_template(name: str) -> "Template | PointwiseTemplate":
    """A packaged template by name (judge_pairwise_v1, judge_pointwise_v1, ...) or a YAML file path with the same
    keys; a template with `kind: pointwise` is a PointwiseTemplate (keys pointwise.POINTWISE_KEYS)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        text, where = read_utf8(path), str(path)
    else:
        resource = resources.files("rualign.eval").joinpath("prompts", f"{name}.yaml")
        if not resource.is_file():
            raise RualignError(f"unknown judge template '{name}'", path="template",
                               expected="judge_pairwise_v1 or a path to a template YAML")
        text, where = resource.read_text(encoding="utf-8"), f"rualign/eval/prompts/{name}.yaml"
    data, _ = parse_yaml_text(text, where)  # invalid YAML or a duplicate key: a ConfigError with the line
    if not isinstance(data, dict):
        raise RualignError("judge template is not a YAML mapping", path=where, expected=f"string keys {_TEMPLATE_KEYS}")
    kind, keys = (PointwiseTemplate, POINTWISE_KEYS) if data.get("kind") == "pointwise" else (Template, _TEMPLATE_KEYS)
    missing = [k for k in keys if not isinstance(data.get(k), str)]
    if missing:
        raise RualignError(f"judge template lacks {missing}", path=where, expected=f"string keys {keys}")
    return kind(**{k: data[k] for k in keys})


def template_for(cfg: JudgeConfig) -> "Template | PointwiseTemplate":
    """cfg's template, refused when it does not fit the mode (a pairwise template cannot score one answer)."""
    template = load_template(cfg.template)
    if (cfg.mode == "pointwise") != isinstance(template, PointwiseTemplate):
        wanted = "a pointwise template (kind: pointwise)" if cfg.mode == "pointwise" else "a pairwise template"
        raise RualignError(f"judge template '{cfg.template}' does not fit mode '{cfg.mode}'", path="template",
                           expected=wanted, hint="leave `template` unset to get the mode's default template")
    return template


_ROLE_NAMES = {"system": "Система", "user": "Пользователь", "assistant": "Ассистент"}


def prompt_text(messages: list[Message]) -> str:
    """The conversation the answers reply to, as the judge reads it."""
    if len(messages) == 1 and messages[0].role == "user":
        return messages[0].content
    return "\n\n".join(f"{_ROLE_NAMES.get(m.role, m.role)}: {m.content}" for m in messages)


def render(template: Template, messages: list[Message], answer_a: str, answer_b: str, kind: str) -> list[dict]:
    values = {"prompt": prompt_text(messages), "answer_a": answer_a, "answer_b": answer_b}
    # One pass, so braces or placeholders inside the answers are never substituted again.
    body = re.sub(r"\{(prompt|answer_a|answer_b)\}", lambda m: values[m.group(1)], template.body)
    instruction = template.logprob_instruction if kind == "logprob" else template.verdict_instruction
    return [{"role": "system", "content": template.system}, {"role": "user", "content": f"{body}\n\n{instruction}"}]


# ---------------------------------------------------------------- inputs

def load_answers(path: str | Path) -> dict[str, AnswerRecord]:
    """answers.jsonl → {id: record} in file order; malformed rows and duplicate ids are errors with line numbers."""
    return {record.id: record for record in read_answers(path)}


def _few(ids: list[str], limit: int = 5) -> str:
    shown = ", ".join(ids[:limit])
    return f"{shown} (+{len(ids) - limit} more)" if len(ids) > limit else shown


def pair_answers(answers_path: str | Path, reference_path: str | Path
                 ) -> tuple[dict[str, AnswerRecord], dict[str, AnswerRecord]]:
    """Model and reference answers for the same ids and the same prompts, or a RualignError naming both files."""
    model, reference = load_answers(answers_path), load_answers(reference_path)
    where = f"{answers_path} vs {reference_path}"
    problems = []
    only_model = [i for i in model if i not in reference]
    only_ref = [i for i in reference if i not in model]
    if only_model:
        problems.append(f"{len(only_model)} id(s) only in {answers_path}: {_few(only_model)}")
    if only_ref:
        problems.append(f"{len(only_ref)} id(s) only in {reference_path}: {_few(only_ref)}")
    differ = [i for i in model if i in reference and _prompt_key(model[i]) != _prompt_key(reference[i])]
    if differ:
        problems.append(f"{len(differ)} id(s) with different prompts: {_few(differ)}")
    if problems:
        raise DataError("answers and references do not pair up: " + "; ".join(problems), path=where,
                        expected="the same ids with the same prompts in both files",
                        hint="generate both answer files from the same prompt file")
    # Lengths feed the LC fit and the report: counted in different tokenizers they are not comparable.
    tokenizer_id.check_same(answers_path, model.values(), reference_path, reference.values())
    return model, reference


def _prompt_key(record: AnswerRecord) -> str:
    return json.dumps([(m.role, m.content.strip()) for m in record.prompt],
                      ensure_ascii=False)


# ---------------------------------------------------------------- jobs

@dataclass(frozen=True)
class Job:
    index: int
    id: str
    order: str
    prompt: list[Message]
    answer_a: str
    answer_b: str
    identical: bool = False  # both answers the same text: scored ½ without a judge call


def same_answer(mine: str, theirs: str) -> bool:
    return mine.strip() == theirs.strip()


def build_jobs(model: dict[str, AnswerRecord], reference: dict[str, AnswerRecord]) -> list[Job]:
    jobs = []
    for pid, record in model.items():
        mine, theirs = record.answer, reference[pid].answer
        identical = same_answer(mine, theirs)
        jobs.append(Job(len(jobs), pid, "model_first", record.prompt, mine, theirs, identical))
        jobs.append(Job(len(jobs), pid, "reference_first", record.prompt, theirs, mine, identical))
    return jobs


def call_key(identity: str, cfg: JudgeConfig, template: Template, job: Job, kind: str,
             messages: list[dict]) -> str:
    return cache_key(model=identity, params={"kind": kind, **request_params(cfg, kind)},
                     template_version=template.version, messages=messages, answer_a=job.answer_a,
                     answer_b=job.answer_b, order=job.order)


# ---------------------------------------------------------------- judging

class _Run:
    """State shared by the concurrent judge tasks of one run."""

    def __init__(self, cfg: JudgeConfig, template: Template, backend, cache: JudgeCache):
        self.cfg, self.template, self.backend, self.cache = cfg, template, backend, cache
        self.mode = cfg.mode
        self.fallback_warned = False
        self.cache_hits = 0
        # Calls in flight by cache key: a second job asking the same call (pointwise: the same answer in the
        # other order) awaits the first instead of paying for it twice.
        self.inflight: dict[str, asyncio.Future] = {}
        # Low-mass logprob calls are asked again with the first token constrained to A/B/C where the backend
        # allows it (JudgeConfig.constraint: a grammar, guided choice, regex or logit_bias; local: its logits).
        self.constrain = cfg.constraint() is not None

    async def call(self, job: Job | None, kind: str, messages: list[dict], key: str | None = None
                   ) -> tuple[JudgeReply, bool]:
        """One judge call through the cache (`key`: pointwise calls bring their own, without an order). The cache
        is read before any await, so a rerun of finished work never reaches the network; a success is written
        before anything else happens."""
        key = key or call_key(self.backend.identity, self.cfg, self.template, job, kind, messages)
        hit = self.cache.get(key)
        with contextlib.suppress(CallFailed):  # an entry cached by an older version unchecked is a miss
            if hit is not None:
                reply = checked_value(hit)
                self.cache_hits += 1
                return reply, True
        if key in self.inflight:
            return await asyncio.shield(self.inflight[key]), True
        future = self.inflight[key] = asyncio.get_running_loop().create_future()
        try:
            reply = checked_value(await self.backend.complete(messages, kind))  # validated before it is stored
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so an unawaited failure is not logged as "never retrieved"
            raise
        finally:
            del self.inflight[key]
        self.cache.put(key, reply.dump())
        future.set_result(reply)
        return reply, False

    def fallback(self) -> None:
        if not self.fallback_warned:
            self.fallback_warned = True
            log.warning("the judge backend returned no logprobs: falling back to verdict mode (parsed JSON "
                        "verdicts) for this run")
        self.mode = "verdict"


def _row(job: Job, mode: str, **fields) -> Judgment:
    return Judgment(id=job.id, order=job.order, mode=mode, **fields)


IDENTICAL_MODE = "identical"


def identical_row(job: Job) -> Judgment:
    """The row of an order whose two answers are the same text: a tie by symmetry, no judge call made."""
    return _row(job, IDENTICAL_MODE, preference=0.5, verdict="tie", identical=True)


def _add_usage(total: Usage, reply: JudgeReply) -> None:
    total.prompt_tokens += reply.usage.prompt_tokens
    total.completion_tokens += reply.usage.completion_tokens


async def judge_job(run: _Run, job: Job) -> Judgment:
    if job.identical:
        return identical_row(job)
    if run.mode == "pointwise":
        return await judge_pointwise(run, job)
    usage = Usage()
    cached: list[bool] = []
    try:
        if run.mode == "logprob":
            messages = render(run.template, job.prompt, job.answer_a, job.answer_b, "logprob")
            value, hit = await run.call(job, "logprob", messages)
            cached.append(hit)
            _add_usage(usage, value)
            raw = json.dumps({"text": value.text, "top_logprobs": value.top_json()}, ensure_ascii=False)
            if value.top_logprobs is not None:
                return await _logprob_row(run, job, value, raw, usage, cached)
            run.fallback()
        return await _verdict(run, job, usage, cached)
    except CallFailed as exc:
        return _row(job, run.mode, error=f"api: {exc}", usage=usage, cached=bool(cached) and all(cached))


async def _logprob_row(run: _Run, job: Job, value: JudgeReply, raw: str, usage: Usage, cached: list[bool]
                       ) -> Judgment:
    """A verdict from the letter probabilities; when they carry less than `min_verdict_mass`, the letter of a
    constrained call (where the backend allows one), else a parse failure. Never renormalised noise."""
    dist = parse.letter_distribution(value.top_logprobs)
    mass = round(dist.mass, 4)
    if dist.probs is not None and dist.mass >= run.cfg.min_verdict_mass:
        slot = parse.argmax_slot(dist.probs)
        return _row(job, "logprob", raw=raw, usage=usage, cached=all(cached), probs=dist.probs, verdict_mass=mass,
                    preference=parse.model_preference(dist.probs, job.order), verdict=parse.slot_to_side(slot, job.order))
    low = (f"parse: the verdict letters A/B/C carry {mass:.3f} of the probability "
           f"(< min_verdict_mass {run.cfg.min_verdict_mass:g})")
    if not run.constrain:
        return _row(job, "logprob", raw=raw, usage=usage, cached=all(cached), verdict_mass=mass, error=low)
    messages = render(run.template, job.prompt, job.answer_a, job.answer_b, "logprob")
    forced, hit = await run.call(job, "constrained", messages)
    cached.append(hit)
    _add_usage(usage, forced)
    # raw stays one JSON object: the free call's text and top logprobs, plus the constrained call's letter.
    raw = json.dumps({**json.loads(raw), "constrained": forced.text}, ensure_ascii=False)
    letter = parse.letter_of_token(forced.text)
    if letter is None:
        return _row(job, "constrained", raw=raw, usage=usage, cached=all(cached), verdict_mass=mass,
                    error=low + "; the constrained call gave no letter either")
    probs = parse.slot_probs_from_verdict(letter)
    return _row(job, "constrained", raw=raw, usage=usage, cached=all(cached), probs=probs, verdict_mass=mass,
                preference=parse.model_preference(probs, job.order), verdict=parse.slot_to_side(letter, job.order))


async def _verdict(run: _Run, job: Job, usage: Usage, cached: list[bool]) -> Judgment:
    messages = render(run.template, job.prompt, job.answer_a, job.answer_b, "verdict")
    value, hit = await run.call(job, "verdict", messages)
    cached.append(hit)
    _add_usage(usage, value)
    raws = [value.text]
    verdict = parse.parse_verdict(value.text)
    if verdict is None:  # one retry with a stricter reminder, the failed answer kept in the conversation
        retry = messages + [{"role": "assistant", "content": value.text},
                            {"role": "user", "content": run.template.reminder}]
        value, hit = await run.call(job, "verdict", retry)
        cached.append(hit)
        _add_usage(usage, value)
        raws.append(value.text)
        verdict = parse.parse_verdict(value.text)
    raw = "\n--- retry after reminder ---\n".join(raws)
    if verdict is None:
        return _row(job, "verdict", raw=raw, usage=usage, cached=all(cached),
                    error="parse: no verdict found in the judge's answer (after one reminder)")
    probs = parse.slot_probs_from_verdict(verdict.overall)
    criteria = {name: (parse.slot_to_side(slot, job.order) if slot else None)
                for name, slot in verdict.criteria.items()} or None
    if criteria is not None and verdict.reason:
        criteria["reason"] = verdict.reason
    return _row(job, "verdict", raw=raw, usage=usage, cached=all(cached), criteria=criteria,
                preference=parse.model_preference(probs, job.order),
                verdict=parse.slot_to_side(verdict.overall, job.order))


async def _judge_all(jobs: list[Job], make_backend, cfg: JudgeConfig, template: Template,
                     cache: JudgeCache) -> tuple[list[Judgment], dict]:
    import time

    from rualign.progress import progress

    backend = make_backend()
    run = _Run(cfg, template, backend, cache)
    with progress() as bar:  # the stage's live display: pairs judged, ETA, judge calls per second
        task, started = bar.add_task("judge", total=len(jobs), metric=""), time.perf_counter()

        # At most `concurrency` jobs in flight, not every job at once: a job's second call (the constrained
        # retry, or pointwise's other answer) then waits behind a few calls instead of behind every other job's
        # first call, so a server that keeps the last prompt's prefix (llama.cpp) still has it.
        in_flight = asyncio.Semaphore(cfg.concurrency)

        async def one(job: Job) -> Judgment:
            async with in_flight:
                row = await judge_job(run, job)
            calls = backend.stats().get("requests", 0)
            bar.update(task, advance=1, metric=f"{calls / max(time.perf_counter() - started, 1e-9):.1f} calls/s")
            return row

        try:
            rows = await asyncio.gather(*(one(job) for job in jobs))
        finally:
            await backend.aclose()
    stats = {**backend.stats(), "cache_hits": run.cache_hits, "fallback_to_verdict": run.fallback_warned}
    return list(rows), stats


def _judge_jobs(jobs: list[Job], cfg: JudgeConfig, template: Template, cache_file: Path
                ) -> tuple[list[Judgment], dict]:
    """Rows for every job, in job order. When every pair is identical nothing needs the judge, so no
    backend is started (for llama.cpp that saves launching a server)."""
    if all(job.identical for job in jobs):
        return [identical_row(job) for job in jobs], {"requests": 0, "retries": 0, "cache_hits": 0,
                                                      "fallback_to_verdict": False}
    with JudgeCache(cache_file) as cache, backend_factory(cfg) as make_backend:
        return asyncio.run(_judge_all(jobs, make_backend, cfg, template, cache))


# ---------------------------------------------------------------- the stage

def judge_status(cfg: JudgeConfig, score: Score) -> JudgeStatus:
    """The judge card's verdict on this judge (judge_check.card_summary), made unvalidated by this run's own
    verdict mass too: a judge that put under half its probability on the letters here is not trusted."""
    from rualign.eval.judge_check import card_summary, find_card
    from rualign.eval.judge_card import MIN_VERDICT_MASS

    status = card_summary(find_card(cfg))
    if score.verdict_mass is not None and score.verdict_mass < MIN_VERDICT_MASS:
        status.status = "unvalidated"
        status.reasons = [*status.reasons, f"in this run the judge put only {score.verdict_mass:.2f} "
                             f"of its probability on the verdict letters (< {MIN_VERDICT_MASS})"]
    return status


def judge_config_hash(answers: Path, reference: Path, cfg: JudgeConfig, template: Template, target: int,
                      seed: int) -> str:
    return stable_hash({"answers": file_hash(answers), "reference": file_hash(reference), "judge": cfg.judge_key(),
                        "template_version": template.version, "target": target, "seed": seed})


def run_judge(answers: str | Path, reference: str | Path, cfg: JudgeConfig, out_dir: str | Path, *,
              target: int = DEFAULT_TARGET, seed: int = 0, cache_path: str | Path | None = None) -> Score:
    """Judge `answers` against `reference`; returns the Score (also written to out_dir/score.json)."""
    from rualign.eval.stats import compute_score

    answers, reference, out_dir = Path(answers), Path(reference), Path(out_dir)
    model_answers, reference_answers = pair_answers(answers, reference)
    template = template_for(cfg)
    config_hash = judge_config_hash(answers, reference, cfg, template, target, seed)
    manifest = read_manifest(out_dir)
    if is_finished(out_dir, config_hash) and manifest.failed_calls == 0 and (out_dir / "score.json").exists():
        log.info("judge output in %s is finished with the same inputs: reusing it", out_dir)
        score = read_score(out_dir / "score.json")
        status = judge_status(cfg, score)
        if score.judge_card != status:  # a judge card filed (or refiled) since: the score carries the new one
            score.judge_card = status
            write_score(out_dir / "score.json", score)
        return score
    jobs = build_jobs(model_answers, reference_answers)
    rows, stats = _judge_jobs(jobs, cfg, template, Path(cache_path or cfg.cache or default_cache_path()))
    # An old manifest must not vouch for files this run is about to replace (a crash midway would mix them).
    (out_dir / MANIFEST).unlink(missing_ok=True)
    write_judgments(out_dir / "judgments.jsonl", rows)
    # The modes the judge actually ran in; "identical" only when no prompt needed a call at all.
    modes = sorted({r.mode for r in rows if not r.identical}) or [IDENTICAL_MODE]
    score = compute_score(rows, model_answers, reference_answers, target=target, seed=seed)
    score.judge = JudgeInfo(name=cfg.display_name(), model=cfg.model, mode="+".join(modes),
                            template_version=template.version)
    score.judge_card = judge_status(cfg, score)
    write_score(out_dir / "score.json", score)
    identical = sum(1 for r in rows if r.identical)
    write_manifest(out_dir, stage="judge", config_hash=config_hash,
                   inputs={"answers": str(answers), "answers_hash": file_hash(answers),
                           "reference": str(reference), "reference_hash": file_hash(reference)},
                   judge=cfg.public(), requested_mode=cfg.mode, modes=modes, template_version=template.version,
                   calls=len(rows) - identical, failed_calls=sum(1 for r in rows if r.error),
                   prompts=len(model_answers), client=stats, identical_pairs=score.identical_pairs.count,
                   usage={k: sum(getattr(r.usage, k) for r in rows) for k in ("prompt_tokens", "completion_tokens")})
    return score
