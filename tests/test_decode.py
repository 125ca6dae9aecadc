"""Continuous batching (eval/decode.py): rows join and leave a running cache, and every row's answer is the
one it gets alone. The reference is `transformers.generate` on one prompt at a time."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model():
    """An untied random head with large weights: greedy output depends on the whole context, so a row that
    saw another row's padding or cache would answer differently."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=False, initializer_range=0.5)
    return LlamaForCausalLM(config).eval()


PAD = 0


def _prompts(lengths: list[int]) -> list[list[int]]:
    generator = torch.Generator().manual_seed(7)
    return [torch.randint(3, 96, (n,), generator=generator).tolist() for n in lengths]


def _alone(model, prompt: list[int], max_new: int, stops: set[int]) -> tuple[list[int], str]:
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=max_new, do_sample=False, pad_token_id=PAD,
                             eos_token_id=sorted(stops))[0, len(prompt):].tolist()
    for i, token in enumerate(out):
        if token in stops:
            return out[:i], "stop"
    return out, "length"


def _decode(model, prompts, *, slots: int, max_new: int, stops: set[int]):
    from rualign.eval.decode import ContinuousDecoder, _Row

    decoder = ContinuousDecoder(model, stop_ids=stops, pad_id=PAD, slots=slots,
                                choose=lambda logits, rows: logits.argmax(dim=-1))
    finished = list(decoder.run(prompts, max_new, lambda i, p: _Row(index=i)))
    return finished


def _stops_that_end_some_rows_early(model, prompts, max_new):
    """Two tokens that the rows produce mid-answer, as stop tokens: rows then finish at different steps."""
    seen = [_alone(model, p, max_new, {95})[0] for p in prompts]
    candidates = [tokens[len(tokens) // 3] for tokens in seen if len(tokens) > 3]
    return set(candidates[:2])


@pytest.mark.parametrize("slots", [1, 2, 3, 16])
def test_every_row_equals_its_answer_alone(model, slots):
    # lengths chosen so admitted prompts are both longer and shorter than the running cache
    prompts = _prompts([5, 40, 3, 17, 60, 9, 2, 33])
    stops = _stops_that_end_some_rows_early(model, prompts, 12)
    finished = _decode(model, prompts, slots=slots, max_new=12, stops=stops)
    assert sorted(index for index, _, _ in finished) == list(range(len(prompts)))  # each prompt exactly once
    got = {index: (tokens, reason) for index, tokens, reason in finished}
    expected = {i: _alone(model, p, 12, stops) for i, p in enumerate(prompts)}
    assert got == expected
    reasons = [reason for _, reason in got.values()]
    assert "stop" in reasons and "length" in reasons  # rows really left the batch at different steps
    assert len({tuple(t) for t, _ in got.values()}) > 2


def test_rows_finish_in_the_order_they_stop(model):
    prompts = _prompts([8, 8, 8, 8])
    stops = _stops_that_end_some_rows_early(model, prompts, 10)
    finished = _decode(model, prompts, slots=4, max_new=10, stops=stops)
    lengths = [len(tokens) + (reason == "stop") for _, tokens, reason in finished]
    assert lengths == sorted(lengths)  # streamed as they end, not held back for the batch


def test_max_new_tokens_one_and_a_first_token_stop(model):
    prompts = _prompts([4, 11, 6])
    first = [_alone(model, p, 1, {95})[0][0] for p in prompts]
    finished = {i: (t, r) for i, t, r in _decode(model, prompts, slots=2, max_new=1, stops={95})}
    assert finished == {i: ([first[i]], "length") for i in range(3)}
    stopped = {i: (t, r) for i, t, r in _decode(model, prompts, slots=2, max_new=5, stops={first[1]})}
    assert stopped[1] == ([], "stop")


def test_buckets_bound_the_padding_of_each_prefill():
    from rualign.eval.decode import _buckets

    prompts = [[1] * n for n in (400, 187, 143, 131, 126, 112, 103, 98, 84, 70, 67, 66, 62, 58, 50, 47)]
    buckets = _buckets(list(range(len(prompts))), prompts)
    assert sorted(i for b in buckets for i in b) == list(range(len(prompts)))
    assert buckets[0] == [0]  # the long outlier is prefilled alone
    for bucket in buckets:
        width, real = len(prompts[bucket[0]]), sum(len(prompts[i]) for i in bucket)
        assert width * len(bucket) <= 1.25 * real


def test_sliding_window_models_fall_back_to_transformers_generate(tmp_path):
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    from rualign.eval import decode
    from rualign.eval.backends import GenParams, HFBackend
    from rualign.models import ensure_default_model

    tokenizer = AutoTokenizer.from_pretrained(ensure_default_model())
    config = MistralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=16,
                           eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    MistralForCausalLM(config).save_pretrained(tmp_path, safe_serialization=True)
    tokenizer.save_pretrained(tmp_path)
    assert not decode.supported(MistralForCausalLM(config))
    backend = HFBackend(str(tmp_path), chat_template="chatml_no_system", batch_size=2)
    assert not backend.continuous
    conversations = [[{"role": "user", "content": text}] for text in ("Привет", "Как дела?", "Да")]
    answers = backend.generate(conversations, GenParams(max_new_tokens=4))
    assert [a.completion_tokens for a in answers] == [4, 4, 4]
