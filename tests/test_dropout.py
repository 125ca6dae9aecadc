"""FastDropout (train/dropout.py): a real, independent Bernoulli mask with the requested rate, unbiased
scaling, gradients through the same mask, and every peft LoRA dropout replaced."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from rualign.train.dropout import FastDropout, keep_mask, use_fast_lora_dropout  # noqa: E402


def test_drop_rate_and_scaling_are_unbiased():
    torch.manual_seed(0)
    out = FastDropout(0.05)(torch.ones(2_000_000))
    dropped = float((out == 0).float().mean())
    assert abs(dropped - 0.05) < 5 * (0.05 * 0.95 / 2e6) ** 0.5  # within 5 sigma of the requested rate
    assert abs(float(out.mean()) - 1.0) < 1e-3  # kept values scaled so the expectation is the input
    values = torch.unique(out).tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(32768 / (32768 - 1638))]


def test_masks_are_independent_across_elements_and_calls():
    torch.manual_seed(1)
    first, second = keep_mask((500_000,), 16384, torch.device("cpu")), keep_mask((500_000,), 16384,
                                                                                   torch.device("cpu"))
    assert not torch.equal(first, second)
    both = float((first & second).float().mean())
    assert abs(both - 0.25) < 0.005  # two p=0.5 masks agree like independent coins
    # every 16-bit lane of the 64-bit draws is usable: each of the 4 lane positions keeps ~half
    lanes = first.view(-1, 4).float().mean(dim=0)
    assert torch.all((lanes - 0.5).abs() < 0.01), lanes


def test_gradient_uses_the_forward_mask_and_eval_is_identity():
    torch.manual_seed(2)
    layer = FastDropout(0.3)
    x = torch.randn(64, 32, requires_grad=True)
    out = layer(x)
    out.sum().backward()
    kept = out != 0
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], layer.scale))
    assert torch.all(x.grad[~kept] == 0)
    layer.eval()
    assert layer(x) is x
    assert FastDropout(0.0).train()(x) is x


def test_every_lora_dropout_is_replaced_and_the_seed_reproduces(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    def loss(seed: int) -> float:
        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                               LoraConfig(r=4, lora_dropout=0.2, target_modules="all-linear", task_type="CAUSAL_LM"))
        for name, param in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.5)
        assert use_fast_lora_dropout(model) == 2 * 7  # 2 layers x 7 linear targets
        assert not any(type(m) is torch.nn.Dropout for m in model.modules() if m.__class__.__name__ == "Dropout"
                       and getattr(m, "p", 0) > 0)
        model.train()
        torch.manual_seed(seed)
        ids = torch.randint(0, 1000, (2, 12))
        return float(model(input_ids=ids, labels=ids).loss)

    assert loss(5) == loss(5)
    assert loss(5) != loss(6)


def test_setting_p_to_zero_switches_it_off_like_any_nn_dropout():
    """TRL's disable_dropout (DPO, KTO, ORPO defaults) sets p = 0 on every nn.Dropout after the model is
    built; a FastDropout must obey it, or those stages would train with dropout they asked to disable."""
    from trl.trainer.utils import disable_dropout_in_model

    model = torch.nn.Sequential(FastDropout(0.3)).train()
    x = torch.ones(1000)
    assert (model(x) == 0).any()
    disable_dropout_in_model(model)
    assert model[0].p == 0 and model(x) is x
