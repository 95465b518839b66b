"""Small, randomly initialised models of the families users bring from the hub, saved as HF
directories (config, weights, a tokenizer trained here by `tokenizers`, sentence-transformers files).

The hub is closed offline, architectures are not: each family keeps what our code must handle
(its tokenizer kind and special tokens, pad id, token types or none, head width, pooling, prompts),
with weights small enough for CI. Real weights' quality cannot be checked this way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_CORPUS = Path(__file__).resolve().parents[1] / "sample_data" / "corpus.jsonl"

# Special tokens per tokenizer convention, in id order (ids 0..n-1).
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
DEBERTA_SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]


@dataclass(frozen=True)
class Family:
    name: str
    model_type: str  # transformers' config model_type
    tokenizer: str  # wordpiece | bpe | unigram
    specials: list[str]
    labels: int | None = 1  # cross-encoder head width; None: a plain encoder (bi)
    pooling: str = "mean"  # bi: sentence-transformers pooling mode
    normalize: bool = True
    prompts: dict[str, str] = field(default_factory=dict)  # sentence-transformers `prompts`
    token_types: bool = True  # the tokenizer returns token_type_ids
    max_positions: int = 128
    id2label: dict[int, str] | None = None

    @property
    def kind(self) -> str:
        return "bi" if self.labels is None else "cross"


E5_PROMPTS = {"query": "query: ", "passage": "passage: "}
BGE_PROMPTS = {"query": "Represent this sentence for searching relevant passages: "}
NOMIC_PROMPTS = {"search_query": "search_query: ", "search_document": "search_document: "}

CROSS_FAMILIES = [
    Family("bert-1label", "bert", "wordpiece", BERT_SPECIALS),  # ms-marco-MiniLM
    Family("bert-2label", "bert", "wordpiece", BERT_SPECIALS, labels=2),  # older / multilingual rerankers
    Family("electra-1label", "electra", "wordpiece", BERT_SPECIALS),  # ms-marco-electra
    Family("roberta-1label", "roberta", "bpe", ROBERTA_SPECIALS, token_types=False),
    Family("xlm-roberta-1label", "xlm-roberta", "unigram", ROBERTA_SPECIALS, token_types=False),  # bge-reranker
    Family(
        "xlm-roberta-2label",
        "xlm-roberta",
        "unigram",
        ROBERTA_SPECIALS,
        labels=2,
        token_types=False,
        id2label={0: "irrelevant", 1: "relevant"},
    ),
    Family("deberta-v2-1label", "deberta-v2", "unigram", DEBERTA_SPECIALS),  # mxbai-rerank (DeBERTa-v3)
    Family("modernbert-1label", "modernbert", "bpe", BERT_SPECIALS, token_types=False, max_positions=8192),
]

BI_FAMILIES = [
    Family("bert-mean", "bert", "wordpiece", BERT_SPECIALS, labels=None),  # all-MiniLM
    Family("bert-cls-bge", "bert", "wordpiece", BERT_SPECIALS, labels=None, pooling="cls", prompts=BGE_PROMPTS),
    Family(
        "xlm-roberta-mean-e5",
        "xlm-roberta",
        "unigram",
        ROBERTA_SPECIALS,
        labels=None,
        prompts=E5_PROMPTS,
        token_types=False,
    ),
    Family(
        "modernbert-mean-nomic",
        "modernbert",
        "bpe",
        BERT_SPECIALS,
        labels=None,
        prompts=NOMIC_PROMPTS,
        token_types=False,
        max_positions=8192,
    ),
    Family(
        "roberta-lasttoken", "roberta", "bpe", ROBERTA_SPECIALS, labels=None, pooling="lasttoken", token_types=False
    ),
    Family("electra-weightedmean", "electra", "wordpiece", BERT_SPECIALS, labels=None, pooling="weightedmean"),
]

FAMILIES = {f.name: f for f in CROSS_FAMILIES + BI_FAMILIES}


def _training_texts() -> list[str]:
    from model_export.parity import PROBE_PAIRS, PROBE_TEXTS

    texts = [json.loads(line)["text"] for line in SAMPLE_CORPUS.read_text().splitlines() if line.strip()]
    texts += [json.loads(line).get("title", "") for line in SAMPLE_CORPUS.read_text().splitlines() if line.strip()]
    prompts = [p for f in FAMILIES.values() for p in f.prompts.values()]
    return texts + PROBE_TEXTS + [t for pair in PROBE_PAIRS for t in pair] + prompts


def train_tokenizer(family: Family, vocab_size: int = 1500):
    """A real tokenizer of the family's kind, trained on the sample corpus, with its pair template."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    specials = family.specials
    if family.tokenizer == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token=specials[1] if specials[1] == "[UNK]" else "[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
    elif family.tokenizer == "bpe":
        unk = "<unk>" if "<unk>" in specials else "[UNK]"
        tokenizer = Tokenizer(models.BPE(unk_token=unk))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
    else:
        unk = "<unk>" if "<unk>" in specials else "[UNK]"
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.normalizer = normalizers.NFKC()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token=unk)
    tokenizer.train_from_iterator(_training_texts(), trainer)
    tokenizer.post_processor = _pair_template(family, tokenizer)
    return tokenizer


def _pair_template(family: Family, tokenizer):
    from tokenizers import processors

    if family.specials is ROBERTA_SPECIALS:  # <s> A </s></s> B </s>, one token type
        ids = {t: tokenizer.token_to_id(t) for t in ("<s>", "</s>")}
        return processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=list(ids.items())
        )
    ids = {t: tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]")}
    second = ":1" if family.token_types else ""
    return processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair=f"[CLS] $A [SEP] $B{second} [SEP]{second}", special_tokens=list(ids.items())
    )


def _special_ids(family: Family) -> dict[str, str]:
    s = family.specials
    if s is ROBERTA_SPECIALS:
        return {"bos_token": "<s>", "cls_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
                "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>"}  # fmt: skip
    return {
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "mask_token": "[MASK]",
    }


def _config(family: Family, vocab_size: int, token_ids: dict[str, int]):
    from transformers import AutoConfig

    small = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=family.max_positions,
        pad_token_id=token_ids["pad_token"],
        # Random logits spread over a few units, like a trained head's, so the parity gate means something.
        initializer_range=0.2,
    )
    extra = {
        "bert": {"type_vocab_size": 2},
        "electra": {"embedding_size": 64, "type_vocab_size": 2},
        "roberta": {"type_vocab_size": 1, "max_position_embeddings": family.max_positions + 2},
        "xlm-roberta": {"type_vocab_size": 1, "max_position_embeddings": family.max_positions + 2},
        # DeBERTa-v3 has no token-type embeddings (type_vocab_size 0) and relative attention.
        "deberta-v2": {
            "type_vocab_size": 0,
            "relative_attention": True,
            "position_biased_input": False,
            "pos_att_type": ["p2c", "c2p"],
            "max_relative_positions": -1,
            "position_buckets": 32,
        },  # fmt: skip
        "modernbert": {
            "global_attn_every_n_layers": 2,
            "local_attention": 32,
            "cls_token_id": token_ids["cls_token"],
            "sep_token_id": token_ids["sep_token"],
            "bos_token_id": token_ids["cls_token"],
            "eos_token_id": token_ids["sep_token"],
            "reference_compile": False,
        },  # fmt: skip
    }[family.model_type]
    config = AutoConfig.for_model(family.model_type, **(small | extra))
    if family.labels is not None:
        config.num_labels = family.labels
        if family.id2label:
            config.id2label = dict(family.id2label)
            config.label2id = {v: k for k, v in family.id2label.items()}
    return config


def make_model(family: Family, out_dir: Path, seed: int = 0) -> Path:
    """Write the family's HF directory into out_dir (and, for a bi-encoder, its sentence-transformers files)."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(family)
    names = _special_ids(family)
    config = _config(family, tokenizer.get_vocab_size(), {k: tokenizer.token_to_id(v) for k, v in names.items()})
    auto = AutoModel if family.labels is None else AutoModelForSequenceClassification
    model = auto.from_config(config).eval()
    model.save_pretrained(out_dir)
    inputs = (
        ["input_ids", "token_type_ids", "attention_mask"] if family.token_types else ["input_ids", "attention_mask"]
    )
    model_max = family.max_positions
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, model_max_length=model_max, model_input_names=inputs, **names
    )
    hf_tokenizer.save_pretrained(out_dir)
    if family.labels is None:
        _sentence_transformers_files(family, out_dir, model_max)
    return out_dir


def _sentence_transformers_files(family: Family, out_dir: Path, max_seq_length: int) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if family.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (out_dir / "2_Normalize").mkdir(exist_ok=True)
    (out_dir / "modules.json").write_text(json.dumps(modules, indent=2))
    (out_dir / "1_Pooling").mkdir(exist_ok=True)
    from model_export.source import LEGACY_POOLING_KEYS  # the keys sentence-transformers writes

    flags = {key: mode == family.pooling for key, mode in LEGACY_POOLING_KEYS.items()}
    pooling = {"word_embedding_dimension": 64} | flags
    (out_dir / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    (out_dir / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    st = {"prompts": family.prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"}
    (out_dir / "config_sentence_transformers.json").write_text(json.dumps(st, indent=2))
