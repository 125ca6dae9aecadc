"""Preference stages (dpo, simpo, orpo, kto, rm, rlhf): method keys, dataset builders and trainer glue.

Canonical records (docs/formats.md) already match TRL's conversational formats: a preference row is
`{prompt, chosen, rejected}` message lists, a kto row `{prompt, completion, label}`, an RLHF row `{prompt}`.
The builders check each row and keep only those keys, so a malformed row fails before any model work,
naming the row. The `train/methods.py` rows point here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from rualign.config import Strict
from rualign.errors import DataError, RualignError
from rualign.runs import read_manifest

# ---- method-specific keys (written at the stage's top level in YAML) -------------------------------------


class _ReferenceParams(Strict):
    beta: float = Field(0.1, gt=0)
    # A stage name (its exported model) or a model folder; default: the model this stage starts from,
    # i.e. the parent stage's output (or the base model for a first stage).
    ref_model: str | None = None
    ref_cache: bool = True              # compute reference log-probs once, cache them on disk


class DPOParams(_ReferenceParams):
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "nca_pair",
                       "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "exo_pair"] = "sigmoid"
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)


class SimPOParams(Strict):
    # The SimPO paper's range for beta is 2.0-2.5 with gamma/beta ~ 0.5; cpo_alpha 0 = pure SimPO
    # (no NLL term), as in the study's public code.
    beta: float = Field(2.0, gt=0)
    gamma: float = Field(1.0, ge=0)     # TRL's `simpo_gamma`: the target reward margin
    cpo_alpha: float = Field(0.0, ge=0)


class ORPOParams(Strict):
    beta: float = Field(0.1, gt=0)      # the odds-ratio term's weight (lambda in the ORPO paper)


class KTOParams(_ReferenceParams):
    desirable_weight: float = Field(1.0, gt=0)
    undesirable_weight: float = Field(1.0, gt=0)


class RMParams(Strict):
    center_rewards_coefficient: float | None = Field(None, ge=0)


class RLHFParams(Strict):
    reward_model: str | None = None     # an `rm` stage name or a sequence-classification model folder
    algorithm: Literal["grpo", "rloo"] = "grpo"
    num_generations: int = Field(4, ge=2)
    max_completion_length: int = Field(128, ge=1)
    beta: float = Field(0.0, ge=0)      # KL weight to the reference (0: no reference model is kept)
    temperature: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _needs_reward_model(self) -> "RLHFParams":
        if not self.reward_model:
            raise ValueError("method 'rlhf' needs `reward_model:` (the name of an `rm` stage, or a folder "
                             "with a sequence-classification reward model)")
        return self


# ---- dataset builders ------------------------------------------------------------------------------------


def _where(row: dict, index: int) -> str:
    return f"row {index + 1} (id {row.get('id', '?')!r})"


def _check_parent_is_a_generator(ctx: Any) -> None:
    """A policy cannot start from a reward model (an `rm` stage exports a classifier, not a causal LM)."""
    config = getattr(ctx, "config", None)
    if config is None or ctx.stage.method == "rm":
        return
    parent = config.parent_of(ctx.stage)
    if parent is not None and config.stage(parent).method == "rm":
        raise RualignError(f"stage '{ctx.stage.name}' ({ctx.stage.method}) would start from '{parent}', a "
                           "reward model", hint=f"set `parent:` to the stage the policy continues from; "
                                                f"name '{parent}' in `reward_model:` instead")


def _check_kinds(rows: list[dict], ctx: Any, accepted: tuple[str, ...]) -> None:
    _check_parent_is_a_generator(ctx)
    method = getattr(ctx.stage, "method", "?")
    for index, row in enumerate(rows):
        kind = row.get("kind")
        if kind not in accepted:
            raise DataError(f"method '{method}' needs records of kind {' or '.join(accepted)}, "
                            f"but {_where(row, index)} has kind {kind!r}",
                            expected=f"a `rualign data` folder of kind {' or '.join(accepted)}")


def _messages(row: dict, key: str, index: int, *, last_role: str | None = None,
              single_assistant: bool = False) -> list[dict]:
    value = row.get(key)
    ok = isinstance(value, list) and value and all(
        isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") in
        ("system", "user", "assistant") for m in value)
    if not ok:
        raise DataError(f"{_where(row, index)}: '{key}' is not a non-empty list of messages",
                        expected="[{'role': 'system|user|assistant', 'content': str}, ...]")
    if single_assistant and (len(value) != 1 or value[0]["role"] != "assistant"):
        raise DataError(f"{_where(row, index)}: '{key}' must be one assistant message",
                        expected="[{'role': 'assistant', 'content': str}]")
    if last_role and value[-1]["role"] != last_role:
        raise DataError(f"{_where(row, index)}: '{key}' must end with a {last_role} turn")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _record_rows(ctx: Any, counts: dict) -> None:
    ctx.record_rows(counts)


def preference_pairs(rows: list[dict], ctx: Any) -> list[dict]:
    _check_kinds(rows, ctx, ("preference",))
    return [{"prompt": _messages(r, "prompt", i, last_role="user"),
             "chosen": _messages(r, "chosen", i, single_assistant=True),
             "rejected": _messages(r, "rejected", i, single_assistant=True)} for i, r in enumerate(rows)]


def _ids(tokenizer: Any, messages: list[dict], generation_prompt: bool = False) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        add_generation_prompt=generation_prompt)
    return list(out["input_ids"])


def build_preference_dataset(rows: list[dict], ctx: Any):
    """dpo / simpo / orpo: TRL's conversational preference format, untokenized (TRL tokenizes).

    Lengths are measured here so the manifest says how many pairs TRL will truncate to max_length, and
    how many it will drop because the prompt alone fills max_length (DPO drops those)."""
    from datasets import Dataset

    pairs = preference_pairs(rows, ctx)
    max_length, tokenizer = ctx.stage.max_length, getattr(ctx, "tokenizer", None)
    counts = {"in": len(rows), "kept": len(pairs),
              "chosen_equals_rejected": sum(p["chosen"][0]["content"] == p["rejected"][0]["content"]
                                            for p in pairs)}
    if tokenizer is not None:
        longest = [max(len(_ids(tokenizer, p["prompt"] + p[side])) for side in ("chosen", "rejected"))
                   for p in pairs]
        prompts = [len(_ids(tokenizer, p["prompt"], True)) for p in pairs]
        counts["truncated_to_max_length"] = sum(n > max_length for n in longest)
        counts["prompt_fills_max_length"] = sum(n >= max_length for n in prompts)
        if pairs and counts["prompt_fills_max_length"] == len(pairs):
            raise RualignError(f"stage '{ctx.stage.name}': every prompt is at least max_length={max_length} "
                               "tokens, so no completion token is left to train on", hint="raise max_length")
    _record_rows(ctx, counts)
    return Dataset.from_list(pairs)


def build_rm_dataset(rows: list[dict], ctx: Any):
    """rm: pairs tokenized here (prompt + answer through the chat template, as TRL does) so that pairs
    longer than max_length are counted in the manifest (TRL's RewardTrainer drops them without a word)."""
    from datasets import Dataset

    pairs = preference_pairs(rows, ctx)
    max_length = ctx.stage.max_length
    columns: dict[str, list] = {"chosen_ids": [], "rejected_ids": []}
    too_long = []
    for row, pair in zip(rows, pairs):
        chosen = _ids(ctx.tokenizer, pair["prompt"] + pair["chosen"])
        rejected = _ids(ctx.tokenizer, pair["prompt"] + pair["rejected"])
        if max(len(chosen), len(rejected)) > max_length:
            too_long.append(row.get("id"))
            continue
        columns["chosen_ids"].append(chosen)
        columns["rejected_ids"].append(rejected)
    _record_rows(ctx, {"in": len(rows), "kept": len(columns["chosen_ids"]),
                       "dropped_longer_than_max_length": len(too_long), "dropped_ids": too_long[:20]})
    if pairs and not columns["chosen_ids"]:
        raise RualignError(f"stage '{ctx.stage.name}': every pair is longer than max_length={max_length} tokens "
                           "(a reward model scores whole answers, so long pairs are dropped, not cut)",
                           hint="raise max_length")
    return Dataset.from_dict(columns)


def kto_rows(rows: list[dict], ctx: Any) -> tuple[list[dict], dict]:
    """kto records as they are; preference pairs unpaired (chosen -> label True, rejected -> False)."""
    _check_kinds(rows, ctx, ("kto", "preference"))
    out, pairs = [], 0
    for i, row in enumerate(rows):
        prompt = _messages(row, "prompt", i, last_role="user")
        if row["kind"] == "preference":
            pairs += 1
            out.append({"prompt": prompt, "completion": _messages(row, "chosen", i, single_assistant=True),
                        "label": True})
            out.append({"prompt": prompt, "completion": _messages(row, "rejected", i, single_assistant=True),
                        "label": False})
            continue
        if not isinstance(row.get("label"), bool):
            raise DataError(f"{_where(row, i)}: 'label' must be true or false", expected="a JSON boolean")
        out.append({"prompt": prompt, "completion": _messages(row, "completion", i, single_assistant=True),
                    "label": row["label"]})
    desirable = sum(r["label"] for r in out)
    counts = {"in": len(rows), "unpaired_pairs": pairs, "kept": len(out), "desirable": desirable,
              "undesirable": len(out) - desirable}
    return out, counts


def build_kto_dataset(rows: list[dict], ctx: Any):
    from datasets import Dataset

    out, counts = kto_rows(rows, ctx)
    if out and (counts["desirable"] == 0 or counts["undesirable"] == 0):
        ctx.log(f"warning: kto data has {counts['desirable']} desirable and {counts['undesirable']} "
                "undesirable rows; KTO learns from both")
    _record_rows(ctx, counts)
    return Dataset.from_list(out)


def prompt_rows(rows: list[dict], ctx: Any) -> list[dict]:
    """RLHF prompts: kind prompt, or the prompts of preference rows, or chat rows up to the last user turn."""
    _check_kinds(rows, ctx, ("prompt", "preference", "chat"))
    out = []
    for i, row in enumerate(rows):
        if row["kind"] == "chat":
            messages = _messages(row, "messages", i)
            last_user = max((j for j, m in enumerate(messages) if m["role"] == "user"), default=None)
            if last_user is None:
                raise DataError(f"{_where(row, i)}: 'messages' has no user turn to use as a prompt")
            out.append({"prompt": messages[:last_user + 1]})
        else:
            out.append({"prompt": _messages(row, "prompt", i, last_role="user")})
    return out


def build_prompt_dataset(rows: list[dict], ctx: Any):
    from datasets import Dataset

    out = prompt_rows(rows, ctx)
    _record_rows(ctx, {"in": len(rows), "kept": len(out)})
    return Dataset.from_list(out)


# ---- TRL config kwargs -----------------------------------------------------------------------------------


def dpo_config_kwargs(params: DPOParams, ctx: Any) -> dict:
    return {"beta": params.beta, "loss_type": [params.loss_type], "label_smoothing": params.label_smoothing,
            "precompute_ref_log_probs": params.ref_cache}


def simpo_config_kwargs(params: SimPOParams, ctx: Any) -> dict:
    return {"beta": params.beta, "loss_type": "simpo", "simpo_gamma": params.gamma,
            "cpo_alpha": params.cpo_alpha}


def orpo_config_kwargs(params: ORPOParams, ctx: Any) -> dict:
    return {"beta": params.beta}


def kto_config_kwargs(params: KTOParams, ctx: Any) -> dict:
    return {"beta": params.beta, "desirable_weight": params.desirable_weight,
            "undesirable_weight": params.undesirable_weight, "precompute_ref_log_probs": params.ref_cache}


def rm_config_kwargs(params: RMParams, ctx: Any) -> dict:
    return {"center_rewards_coefficient": params.center_rewards_coefficient}


# ---- models named by a stage key -------------------------------------------------------------------------


def stage_or_folder(spec: str, ctx: Any, key: str) -> str:
    """A model named in a stage key: another stage of this config (its exported model) or a folder."""
    from rualign.models import resolve_model

    names = [s.name for s in ctx.config.stages]
    if spec in names:
        folder = ctx.stage_output(spec)
        manifest = read_manifest(folder)
        if manifest is None or getattr(manifest, "model_path", None) is None:
            raise RualignError(f"stage '{ctx.stage.name}': {key} '{spec}' is a stage that has not finished",
                               path=folder, hint=f"make '{spec}' an ancestor of '{ctx.stage.name}' "
                                                 "(parent:) so it runs first")
        return manifest.model_path
    if not Path(spec).expanduser().exists():
        raise RualignError(f"stage '{ctx.stage.name}': {key} '{spec}' is neither a stage of this config "
                           "nor an existing model folder", expected=f"one of {', '.join(names)} or a folder")
    return resolve_model(spec)


def reference_trainer_kwargs(ctx: Any) -> dict:
    """dpo / kto: the reference model (recorded for the manifest) and the on-disk reference log-prob cache."""
    from rualign.train.refcache import RefCache, model_identity

    params = ctx.stage.method_params()
    kwargs: dict = {}
    if params.ref_model:
        location, source = stage_or_folder(params.ref_model, ctx, "ref_model"), f"ref_model: {params.ref_model}"
    else:
        location, source = ctx.start_model, "the model this stage starts from (parent output or base)"
    # The policy's frozen start equals the reference unless another model was named or the parent's
    # adapter is continued (then disabling the adapter would give the grandparent, not the parent).
    if params.ref_model or ctx.stage.continue_adapter:
        from rualign.train.lora import load_base

        kwargs["ref_model"] = load_base(location, trust_remote_code=ctx.config.trust_remote_code)
    identity = model_identity(location)
    ctx.info["reference"] = {"model": location, "source": source, "hash": identity}
    if params.ref_cache:
        kwargs["ref_cache"] = RefCache(identity=identity, precision=ctx.precision, info=ctx.info)
    return kwargs
