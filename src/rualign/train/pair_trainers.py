"""The CPO (SimPO) and ORPO trainers, counting the tokens each step trains on.

TRL's CPO/ORPO batches carry `chosen_*` / `rejected_*` tensors and no `input_ids`, so transformers'
token counter saw nothing and the stage manifest reported 0 tokens and 0 tokens/s. Counting here keeps
the manifest's throughput honest and comparable with dpo/kto/rm stages (prompt + answer, both sides).
"""

from __future__ import annotations

import torch
from trl.experimental.cpo import CPOTrainer
from trl.experimental.orpo import ORPOTrainer


class _PairTokenCount:
    def _track_num_input_tokens(self, inputs):
        mode = self.args.include_num_input_tokens_seen
        if mode == "no" or "chosen_input_ids" not in inputs:
            return super()._track_num_input_tokens(inputs)
        if mode == "non_padding":
            count = inputs["chosen_attention_mask"].sum() + inputs["rejected_attention_mask"].sum()
        else:
            count = inputs["chosen_input_ids"].numel() + inputs["rejected_input_ids"].numel()
        count = torch.as_tensor(count, device=self.args.device, dtype=torch.int64)
        self.state.num_input_tokens_seen += self.accelerator.gather(count).sum().item()


class SimPOTrainer(_PairTokenCount, CPOTrainer):
    pass


class CountingORPOTrainer(_PairTokenCount, ORPOTrainer):
    pass
