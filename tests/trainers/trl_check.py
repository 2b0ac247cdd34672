"""Train on koalabot's export files with TRL, unedited: run in the trainers' own environment.

    python tests/trainers/trl_check.py --sft sft.jsonl --kto kto.jsonl --dpo dpo.jsonl

This script never imports koalabot: it runs in a separate virtual environment with `trl` (and
torch), as a person training on their export would, because the bot's TGI client pins an older
huggingface-hub than current transformers. For each file it loads the rows with Hugging Face
`datasets`, asks TRL's own format checks what it sees (`is_conversational`), and runs a few steps
of SFTTrainer, KTOTrainer or DPOTrainer on a tiny randomly initialised Llama model, with a
tokenizer trained on the spot from the files' own text (no download of any model or tokenizer).
The chat template is strict, as Llama 2's is: roles must alternate user/assistant, and a
conversation that breaks that fails here as it would in a real run.

Prints one JSON object: per trainer, the format TRL recognised, the rows and the losses.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Strict alternation, as Llama 2's chat template: any other order raises in apply_chat_template.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ 'USER: ' + message['content'] + ' ' }}"
    "{% else %}{{ 'GPT: ' + message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'GPT:' }}{% endif %}"
)
SPECIALS = ["<s>", "</s>", "<pad>", "<unk>"]


def texts(value: Any) -> Iterator[str]:
    """Every string inside a row, however nested."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from texts(item)


def train_tokenizer(files: list[Path]) -> Any:
    """A byte-level BPE tokenizer learnt from the export files, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    corpus = [text for row in rows for text in texts(row)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def tiny_model(tokenizer: Any) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def common_args(out: str) -> dict[str, Any]:
    return {
        "output_dir": out,
        "max_steps": 3,
        "per_device_train_batch_size": 2,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "seed": 0,
        "learning_rate": 1e-3,
    }


def run_trainer(kind: str, path: Path, tokenizer: Any, out: str) -> dict[str, Any]:
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer, SFTConfig, SFTTrainer
    from trl.data_utils import is_conversational

    dataset = load_dataset("json", data_files=str(path), split="train")
    first = dataset[0]
    model = tiny_model(tokenizer)
    args = common_args(out)
    if kind == "sft":
        trainer: Any = SFTTrainer(
            model=model,
            args=SFTConfig(**args, max_length=256),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
    elif kind == "kto":
        trainer = KTOTrainer(
            model=model,
            ref_model=tiny_model(tokenizer),  # the same seed: the starting point, frozen
            args=KTOConfig(**args, max_length=256),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
    else:
        trainer = DPOTrainer(
            model=model,
            ref_model=tiny_model(tokenizer),
            args=DPOConfig(**args, max_length=256),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "rows": len(dataset),
        "columns": sorted(dataset.column_names),
        "conversational": is_conversational(first),
        "losses": losses,
        "finite": bool(losses) and all(math.isfinite(x) for x in losses),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    for kind in ("sft", "kto", "dpo"):
        parser.add_argument(f"--{kind}", type=Path, help=f"`koalabot export --format {kind}` file")
    args = parser.parse_args()
    files = {k: v for k in ("sft", "kto", "dpo") if (v := getattr(args, k)) is not None}
    tokenizer = train_tokenizer(list(files.values()))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as out:
        for kind, path in files.items():
            results[kind] = run_trainer(kind, path, tokenizer, out)
    print(json.dumps(results))
    return 0 if all(r["finite"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
