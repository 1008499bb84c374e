"""Export a student cross-encoder to ONNX and check it against PyTorch on real pairs."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertForSequenceClassification

from rankstill.pair_tokenizer import PairTokenizer

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "scores"


class _LogitsOnly(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).logits


class UnpaddedBertScorer(torch.nn.Module):
    """A BERT cross-encoder's logits, computed on real tokens only (as TEI runs BERT: no padding).

    Same inputs and outputs as the padded model ([batch, sequence] right-padded, logits [batch, 1]),
    so Triton configs, batching and clients are unchanged. Inside, the real tokens are gathered
    into one [tokens, hidden] matrix: embeddings, projections, layer norms and feed-forwards run on
    real tokens only; only attention (small at these lengths) sees the padded layout. The last layer
    computes keys and values for every token but queries, output and feed-forward only for [CLS],
    the one row the classifier reads. A padded token then costs a third to a half of a real one, and
    padding no longer dictates how a request is cut into model runs.
    """

    def __init__(self, model: BertForSequenceClassification):
        super().__init__()
        self.bert, self.classifier = model.bert, model.classifier
        layers = self.bert.encoder.layer
        self.projections = torch.nn.ModuleList(
            _side_by_side(*(getattr(layer.attention.self, part) for part in projected_parts(index, len(layers))))
            for index, layer in enumerate(layers))

    def forward(self, input_ids, attention_mask, token_type_ids):
        batch, length = input_ids.shape
        # [CLS] always counts, so that a row with no real token (Triton's all-zeros warm-up) still scores.
        attention_mask = torch.cat([torch.ones_like(attention_mask[:, :1]), attention_mask[:, 1:]], dim=1)
        mask = attention_mask.reshape(-1)
        kept = torch.nonzero(mask).reshape(-1)  # flat positions of the real tokens
        # Each slot of the padded layout reads a real token's row: its own, or (padding) the row's last
        # real token, which attention masks out and whose outputs are dropped.
        slot = torch.cumsum(mask, 0) - 1
        embeddings = self.bert.embeddings
        positions = torch.arange(length, device=input_ids.device).repeat(batch)[kept]
        hidden = embeddings.LayerNorm(embeddings.word_embeddings(input_ids.reshape(-1)[kept])
                                      + embeddings.position_embeddings(positions)
                                      + embeddings.token_type_embeddings(token_type_ids.reshape(-1)[kept]))
        attention_bias = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        lengths = attention_mask.sum(1)
        first_tokens = torch.cumsum(lengths, 0) - lengths  # each pair's [CLS] row
        layers = self.bert.encoder.layer
        for index, (layer, projection) in enumerate(zip(layers, self.projections)):
            cls_only = index == len(layers) - 1
            queries = hidden[first_tokens] if cls_only else hidden
            hidden = self._layer(layer, projection, queries, hidden, slot, kept, attention_bias, cls_only)
        return self.classifier(self.bert.pooler.activation(self.bert.pooler.dense(hidden)))

    @staticmethod
    def _layer(layer, projection, queries, hidden, slot, kept, attention_bias, cls_only: bool):
        attention = layer.attention.self
        heads, size = attention.num_attention_heads, attention.attention_head_size
        batch, length = attention_bias.shape[0], attention_bias.shape[-1]
        # [tokens, parts × hidden] -> parts × [batch, heads, length, size]
        projected = projection(hidden)[slot].reshape(batch, length, -1, heads, size).transpose(1, 3)
        if cls_only:
            keys, values = projected[:, :, 0], projected[:, :, 1]
            query = attention.query(queries).reshape(batch, heads, 1, size)
        else:
            query, keys, values = projected[:, :, 0], projected[:, :, 1], projected[:, :, 2]
        weights = torch.softmax(query @ keys.transpose(-1, -2) / size ** 0.5 + attention_bias, dim=-1)
        context = (weights @ values).transpose(1, 2).reshape(-1, heads * size)
        if not cls_only:
            context = context[kept]
        attended = layer.attention.output(context, queries)
        return layer.output(layer.intermediate(attended), attended)


def projected_parts(layer: int, layers: int) -> tuple[str, ...]:
    """The projections `UnpaddedBertScorer.projections[layer]` computes side by side in one matrix product:
    those a layer needs on every token (the last layer's queries are for [CLS] only)."""
    return ("key", "value") if layer == layers - 1 else ("query", "key", "value")


def _side_by_side(*linears: torch.nn.Linear) -> torch.nn.Linear:
    """One Linear whose outputs are those of `linears`, concatenated."""
    fused = torch.nn.Linear(linears[0].in_features, sum(linear.out_features for linear in linears))
    with torch.no_grad():
        fused.weight.copy_(torch.cat([linear.weight for linear in linears]))
        fused.bias.copy_(torch.cat([linear.bias for linear in linears]))
    return fused


def export_onnx(model: torch.nn.Module, tokenizer: PairTokenizer, path: Path, opset: int = 17) -> Path:
    """Write `model` as ONNX with dynamic batch and sequence axes; output `scores` [batch, 1].

    BERT cross-encoders (every student, MiniLM teachers) go out unpadded (`UnpaddedBertScorer`);
    other architectures as their own forward."""
    model.eval()
    sample = tokenizer.encode(["sample query", "another"], ["a product title", "a longer product title here"])
    args = tuple(torch.from_numpy(sample.as_feeds()[name]) for name in INPUT_NAMES)
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    dynamic_axes[OUTPUT_NAME] = {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = UnpaddedBertScorer(model) if isinstance(model, BertForSequenceClassification) else _LogitsOnly(model)
    torch.onnx.export(wrapped, args, str(path), input_names=list(INPUT_NAMES),
                      output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes,
                      opset_version=opset, dynamo=False)
    return path


def quantize_int8(fp32_path: Path, int8_path: Path) -> Path:
    """Dynamic int8 quantization, per output channel (activations quantized at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8_path.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True)
    return int8_path
