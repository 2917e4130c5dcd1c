"""Run by tests/test_ddp.py under ``torchrun --nproc_per_node=2``: a few DDP steps, then each rank saves its weights."""
import os
import sys

from safetensors.torch import save_file

from reasoning_lib.data import collate, encode_examples, make_splits
from reasoning_lib.models import build_model
from reasoning_lib.runtime import seed_everything
from reasoning_lib.tokenization import build_digit_tokenizer
from reasoning_lib.train import TrainConfig, train

out = sys.argv[1]
rank = int(os.environ["RANK"])
tokenizer = build_digit_tokenizer()
dataset = encode_examples(tokenizer, make_splits(2, 256, 0, 0, seed=0).train, "all")
seed_everything(100 + rank)  # different initial weights per rank: DDP must broadcast rank 0's
model = build_model("tiny", tokenizer=tokenizer, dropout=0.1)
save_file({k: v.contiguous() for k, v in model.state_dict().items() if "lm_head" not in k}, f"{out}/init{rank}.safetensors")
config = TrainConfig(max_steps=5, batch_size=4, grad_accum_steps=2, lr=1e-3, log_every=1, progress=False, device="cpu")
result = train(model, dataset, config, lambda b: collate(b, tokenizer.pad_token_id))
save_file({k: v.contiguous() for k, v in result.model.state_dict().items() if "lm_head" not in k}, f"{out}/rank{rank}.safetensors")
print(f"rank {rank} done, loss {result.final_loss:.4f}")
