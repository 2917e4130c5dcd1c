"""Run by tests/test_run_settings.py, plainly and under ``torchrun --nproc_per_node=2``: a run of a fixed global
batch through ``run_settings.train_settings``; rank 0 saves the weights and the per-process split it used."""
import json
import sys
from pathlib import Path

from safetensors.torch import save_file

from reasoning_lib.data import collate, encode_examples, make_splits
from reasoning_lib.models import build_model
from reasoning_lib.run_settings import train_settings
from reasoning_lib.runtime import launch_info, seed_everything
from reasoning_lib.tokenization import build_digit_tokenizer
from reasoning_lib.train import train

out, run_dir = sys.argv[1], sys.argv[2]
tokenizer = build_digit_tokenizer()
examples = make_splits(2, 64, 0, 0, seed=0).train
dataset = encode_examples(tokenizer, examples, "all")
seed_everything(0)
model = build_model("tiny", tokenizer=tokenizer, dropout=0.0)
initial = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if "lm_head" not in k}
config = train_settings(global_batch=16, micro_batch_size=4, steps=4, lr=3e-3, seed=0, device="cpu", max_grad_norm=None)
config.progress = False
result = train(model, dataset, config, lambda b: collate(b, tokenizer.pad_token_id), output_dir=run_dir,
               settings={"task": "2x2"})
if launch_info().is_main:
    save_file({k: v.contiguous() for k, v in result.model.state_dict().items() if "lm_head" not in k}, f"{out}/weights.safetensors")
    save_file(initial, f"{out}/initial.safetensors")
    split = {"batch_size": config.batch_size, "grad_accum_steps": config.grad_accum_steps, "steps": result.step,
             "steps_trained": result.steps_trained}
    (Path(out) / "split.json").write_text(json.dumps(split))
