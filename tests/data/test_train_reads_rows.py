"""The generated train.py on chat rows: it trains and evaluates exactly the loss_mask's tokens."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

from slmc.layout import LAYOUT
from slmc.render_train import render_train_script
from tests.stages.test_train_script import load_script

from .test_tokenize import compiled_data


def test_targets_are_masked_where_loss_mask_is_zero_and_perplexity_counts_only_them(tmp_path, chat_jsonl):
    run = tmp_path / "run"
    cfg, _ = compiled_data(run, chat_jsonl, "train.seq_len=64", "train.batch_size=2", "train.eval_batches=100")
    (run / LAYOUT.train_script).write_text(render_train_script(cfg), encoding="utf-8")
    script = load_script(run)
    rows = script.load_rows("heldout_tokens")
    saved = load_file(str(run / LAYOUT.heldout_tokens))
    assert torch.equal(rows[:, 0], torch.from_numpy(saved["input_ids"]).long())
    mask = torch.from_numpy(saved["loss_mask"]).bool()
    assert torch.equal(rows[:, 1] != -100, mask)  # a target exactly where the mask is 1
    # the held-out perplexity of a model that knows nothing: exp of the mean loss over the masked tokens only
    torch.manual_seed(0)

    class Uniform(torch.nn.Module):
        def forward(self, input_ids, use_cache=False):
            logits = torch.randn(*input_ids.shape, 600)
            self.seen.append(logits)
            return type("Out", (), {"logits": logits})()

    model = Uniform()
    model.seen = []
    env = script.Env(rank=0, local_rank=0, world=1, device=torch.device("cpu"))
    ppl = script.evaluate(model, rows, env)
    logits = torch.cat(model.seen)
    targets = torch.from_numpy(saved["input_ids"]).long()[:, 1:]
    expected = F.cross_entropy(logits[mask[:, 1:]], targets[mask[:, 1:]])
    assert math.isclose(ppl, math.exp(expected.item()), rel_tol=1e-5)
