"""`rualign generate`: answer every prompt once, resumably, and write answers.jsonl in prompt order.

Resume: each finished answer is appended (fsynced) to `<out stem>.work.jsonl`; a rerun reuses records
whose prompt, generator, params and counting tokenizer are identical and only answers the missing ids.
When every prompt has an answer, `answers.jsonl` is written atomically in prompt order and the work file
removed. The hf backend streams answers as they finish (continuous batching); the others get batches of
length-sorted prompts (less padding). Results go back by id.
`answer_tokens` is counted in a NAMED tokenizer (default: the embedded default), so lengths of answers
from different models and servers are comparable.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from rualign.errors import RualignError
from rualign.eval.backends import Backend, Completion, GenParams
from rualign.records import AnswerRecord, GeneratorInfo, read_answers, write_answers
from rualign.runs import JsonlAppender


class TokenCounter:
    """Counts answer tokens in a named tokenizer ('default' = the embedded default model's).

    `name` is its identity "NAME@sha256:HASH" (eval/tokenizer_id.py): two tokenizers both called "default" but
    with different vocabularies count differently, and the judge refuses to compare such lengths."""

    def __init__(self, name: str = "default", tokenizer: Any = None):
        from rualign.eval.tokenizer_id import identity

        if tokenizer is None:
            from rualign.models import load_tokenizer

            tokenizer = load_tokenizer(name, chat_template="chatml_no_system")
        self.name, self._tokenizer = identity(name, tokenizer), tokenizer

    def count(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class GenerateSummary:
    out: Path
    total: int
    reused: int = 0
    generated: int = 0
    stale: int = 0  # records in the work file made with other settings: ignored and regenerated
    finish_reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    new_tokens: int = 0
    failed: list[str] = field(default_factory=list)  # ids whose request failed (openai backend)

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def work_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.work.jsonl")


def make_record(prompt: dict, completion: Completion, *, backend: Backend, params: GenParams,
                counter: TokenCounter) -> AnswerRecord:
    return AnswerRecord(
        id=prompt["id"], prompt=prompt["messages"], category=prompt.get("category"), answer=completion.text,
        answer_tokens=counter.count(completion.text), tokenizer=counter.name, finish_reason=completion.finish_reason,
        generator=generator_info(backend), params=params_record(backend, params))


def generator_info(backend: Backend) -> GeneratorInfo:
    return GeneratorInfo(backend=backend.name, model=backend.model, adapter=backend.adapter)


def params_record(backend: Backend, params: GenParams) -> dict[str, Any]:
    # The backend's settings() add whatever else can change an answer (batch_size under bf16, the endpoint).
    return {"max_new_tokens": params.max_new_tokens, "temperature": params.temperature, "top_p": params.top_p,
            "seed": params.seed, **backend.settings()}


def _reusable(record: AnswerRecord, prompt: dict, expected: AnswerRecord) -> bool:
    return ([m.model_dump() for m in record.prompt] == prompt["messages"] and record.generator == expected.generator
            and record.params == expected.params and record.tokenizer == expected.tokenizer)


def _load_done(prompts: list[dict], sources: list[Path], expected: AnswerRecord) -> tuple[dict[str, AnswerRecord], int]:
    """Finished records from the final file and the work file (later lines win); count the stale ones."""
    by_id = {p["id"]: p for p in prompts}
    done: dict[str, AnswerRecord] = {}
    stale_ids: set[str] = set()
    for source in sources:
        if not source.exists():
            continue
        for record in read_answers(source, strict=False):
            if record.id not in by_id:
                continue  # an answer to a prompt no longer in the file: not ours to keep
            if _reusable(record, by_id[record.id], expected):
                done[record.id] = record
                stale_ids.discard(record.id)
            elif record.id not in done:
                stale_ids.add(record.id)
    return done, len(stale_ids)


def _batches(pending: list[dict], backend: Backend) -> list[list[dict]]:
    # Longest first: similar lengths share a batch (less padding) and a memory problem shows up at once.
    ordered = sorted(pending, key=lambda p: -backend.prompt_length(p["messages"]))
    size = backend.batch_size
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def _answers(pending: list[dict], backend: Backend, params: GenParams) -> Iterator[tuple[dict, Completion | None]]:
    """(prompt, completion) pairs as they finish: streamed by a continuous-batching backend, else per batch
    of length-sorted prompts."""
    if getattr(backend, "continuous", False):
        for index, completion in backend.stream([p["messages"] for p in pending], params):
            yield pending[index], completion
        return
    for batch in _batches(pending, backend):
        completions = backend.generate([p["messages"] for p in batch], params)
        if len(completions) != len(batch):
            raise RuntimeError(f"backend returned {len(completions)} answers for {len(batch)} prompts")
        yield from zip(batch, completions)


def generate_answers(prompts: list[dict], backend: Backend, params: GenParams, out: str | Path, *,
                     counter: TokenCounter, on_batch: Callable[[int], None] | None = None) -> GenerateSummary:
    """Answer the prompts not yet answered with these settings; write `out` in prompt order when complete."""
    out = Path(out)
    work = work_path(out)
    # What a reusable record must share with the records this run would write (all but the answer).
    expected = AnswerRecord(id="", prompt=[], answer="", generator=generator_info(backend),
                            params=params_record(backend, params), tokenizer=counter.name)
    summary = GenerateSummary(out=out, total=len(prompts))
    with JsonlAppender(work) as appender:  # opening cuts a torn last line left by a kill
        done, summary.stale = _load_done(prompts, [out, work], expected)
        summary.reused = len(done)
        if on_batch and done:
            on_batch(len(done))
        pending = [p for p in prompts if p["id"] not in done]
        started = time.perf_counter()
        for prompt, completion in _answers(pending, backend, params):
            if completion is None:
                summary.failed.append(prompt["id"])
            else:
                record = make_record(prompt, completion, backend=backend, params=params, counter=counter)
                appender.append(record)  # every answer is durable as soon as it exists
                done[prompt["id"]] = record
                summary.generated += 1
                summary.new_tokens += completion.completion_tokens or record.answer_tokens
            if on_batch:
                on_batch(1)
        summary.seconds = time.perf_counter() - started
    if summary.failed:
        # Never write a final file with holes: the finished answers stay in the work file for the rerun.
        raise RualignError(f"{len(summary.failed)} of {len(prompts)} prompts got no answer (requests failed "
                           f"after retries): {', '.join(summary.failed[:5])}{' …' if len(summary.failed) > 5 else ''}",
                           path=work, hint=f"rerun the same command: the {len(done)} finished answers are reused")
    final = [done[p["id"]] for p in prompts]
    summary.finish_reasons = dict(Counter(record.finish_reason or "?" for record in final))
    write_answers(out, final)
    work.unlink(missing_ok=True)
    return summary


def run_with_progress(prompts: list[dict], backend: Backend, params: GenParams, out: str | Path, *,
                      counter: TokenCounter) -> GenerateSummary:
    """generate_answers with the shared progress bar (silent with --quiet / RUALIGN_QUIET)."""
    from rualign.progress import progress

    with progress() as bar:
        task = bar.add_task("generating", total=len(prompts))
        return generate_answers(prompts, backend, params, out, counter=counter,
                                on_batch=lambda n: bar.advance(task, n))
