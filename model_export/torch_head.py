"""Our own cross-encoders in PyTorch: BERT tokens → mean pooling → one logit. Training fits it and
export's parity gate runs it as the reference, so it lives here, below both.

The stock sequence-classification head reads [CLS] through BERT's pooler, whose output for the
MiniLM checkpoint barely varies between inputs (std .04): it could not even overfit 8 pairs.
Mean pooling over tokens learns. The head travels as `twostage_head.json` beside the HF weights;
export carries it into the ONNX model directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from handler.manifest import HEAD_FILE


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class MeanPoolCrossEncoder(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, 1)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, **batch) -> torch.Tensor:
        hidden = self.encoder(**batch).last_hidden_state
        return self.head(mean_pool(hidden, batch["attention_mask"])).squeeze(-1)

    @classmethod
    def load(cls, directory: Path) -> MeanPoolCrossEncoder:
        from transformers import AutoModel

        model = cls(AutoModel.from_pretrained(str(directory)))
        head = json.loads((Path(directory) / HEAD_FILE).read_text())
        with torch.no_grad():
            model.head.weight.copy_(torch.tensor([head["weight"]]))
            model.head.bias.fill_(head["bias"])
        return model.eval()

    def save(self, directory: Path, tokenizer, max_length: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_length}))
        head = {"pooling": "mean", "weight": self.head.weight[0].tolist(), "bias": self.head.bias[0].item()}
        (directory / HEAD_FILE).write_text(json.dumps(head))
