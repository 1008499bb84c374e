"""SASRec, GRU4Rec and Caser over a shared item-input embedding, each scoring every item.

All three read `history` [batch, window] (padding id = number of items, after the real items)
and `lengths` [batch], and return scores [batch, num_items] from a final linear layer, as in
DLLM2Rec's reference students.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class SeqShape:
    kind: str = "sasrec"  # sasrec | gru4rec | caser
    num_items: int = 1682
    window: int = 10
    hidden: int = 64
    layers: int = 1
    heads: int = 1
    dropout: float = 0.1
    text_dim: int = 0  # width of the teacher/text item embeddings mixed into the input (0: none)
    tie_output: bool = False  # score items with the item-input table (SASRec's shared embeddings), so that
    # embedding distillation reaches the scores too, instead of a separate output layer

    def to_dict(self) -> dict:
        return asdict(self)


class ItemInput(nn.Module):
    """ID embedding, plus `weight` × projector(fixed external item embedding) when one is given.

    This is DLLM2Rec's collaborative embedding distillation (and the teacher's text input).
    The projector's bias is the learnable offset. `fold()` turns the sum into one plain table so
    that serving needs no teacher tensors.
    """

    def __init__(self, num_items: int, hidden: int, external: torch.Tensor | None = None, weight: float = 1.0):
        super().__init__()
        self.ids = nn.Embedding(num_items + 1, hidden, padding_idx=num_items)
        nn.init.normal_(self.ids.weight, std=0.02)
        with torch.no_grad():
            self.ids.weight[num_items].zero_()
        self.weight = weight
        if external is not None:
            padded = torch.cat([external.float(), torch.zeros(1, external.shape[1])])
            self.register_buffer("external", padded, persistent=False)
            self.projector = nn.Linear(external.shape[1], hidden)
        else:
            self.external = None
            self.projector = None

    def table(self) -> torch.Tensor:
        table = self.ids.weight
        if self.projector is not None:
            mixed = self.weight * self.projector(self.external)
            mixed = torch.cat([mixed[:-1], torch.zeros_like(mixed[-1:])])  # padding stays zero
            table = table + mixed
        return table

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        if self.projector is None:
            return self.ids(history)
        return nn.functional.embedding(history, self.table())

    @torch.no_grad()
    def fold(self) -> None:
        """Replace ID + projected external embeddings by their sum, a single table."""
        if self.projector is not None:
            self.ids.weight.copy_(self.table())
            self.projector = None
            self.external = None


class SeqRecommender(nn.Module):
    def __init__(self, shape: SeqShape, item_input: ItemInput):
        super().__init__()
        self.shape = shape
        self.item_input = item_input
        self.dropout = nn.Dropout(shape.dropout)
        if shape.tie_output:
            self.output_bias = nn.Parameter(torch.zeros(shape.num_items))
        else:
            self.output = nn.Linear(self.state_width(), shape.num_items)

    def state_width(self) -> int:
        return self.shape.hidden

    def encode(self, embedded: torch.Tensor, history: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def state(self, history: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The row's final hidden state [batch, state_width], before the output layer."""
        return self.encode(self.dropout(self.item_input(history)), history, lengths)

    def output_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item's output vector [num_items, width] and bias [num_items]."""
        if self.shape.tie_output:
            return self.item_input.table()[:-1], self.output_bias
        return self.output.weight, self.output.bias

    def scores(self, state: torch.Tensor) -> torch.Tensor:
        """Every item's score [batch, num_items] from the rows' states."""
        weight, bias = self.output_layer()
        return nn.functional.linear(state, weight, bias)

    def forward(self, history: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.scores(self.state(history, lengths))

    def score_items(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of the given items only (items [batch, n] → [batch, n]), equal to forward()'s at those
        columns: training needs a few scores per row, and the output layer's gradient then touches only them."""
        weight, bias = self.output_layer()
        return torch.einsum("bd,bnd->bn", state, weight[items]) + bias[items]


def _last(states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    index = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, states.shape[-1])
    return states.gather(1, index).squeeze(1)


class SASRec(SeqRecommender):
    def __init__(self, shape: SeqShape, item_input: ItemInput):
        super().__init__(shape, item_input)
        self.positions = nn.Embedding(shape.window, shape.hidden)
        layer = nn.TransformerEncoderLayer(shape.hidden, shape.heads, 4 * shape.hidden, shape.dropout, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, shape.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(shape.hidden)
        causal = torch.triu(torch.full((shape.window, shape.window), float("-inf")), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)

    def encode(self, embedded, history, lengths):
        positions = torch.arange(history.shape[1], device=history.device)
        padding = (history == self.shape.num_items).unsqueeze(-1)
        x = (embedded + self.positions(positions)).masked_fill(padding, 0.0)
        # Causal attention: position t sees 0..t, so real positions never attend to the padding after them.
        states = self.blocks(x, mask=self.causal[: history.shape[1], : history.shape[1]])
        return self.norm(_last(states, lengths))


class GRU4Rec(SeqRecommender):
    def __init__(self, shape: SeqShape, item_input: ItemInput):
        super().__init__(shape, item_input)
        self.gru = nn.GRU(shape.hidden, shape.hidden, num_layers=shape.layers, batch_first=True)

    def encode(self, embedded, history, lengths):
        states, _ = self.gru(embedded)  # the GRU runs left to right: padding comes after the last real item
        return _last(states, lengths)


class Caser(SeqRecommender):
    """Horizontal convolutions of every height 1..window (max-pooled) and vertical ones, as in Caser."""

    HORIZONTAL = 16
    VERTICAL = 4

    def __init__(self, shape: SeqShape, item_input: ItemInput):
        super().__init__(shape, item_input)
        self.horizontal = nn.ModuleList(
            nn.Conv2d(1, self.HORIZONTAL, (height, shape.hidden)) for height in range(1, shape.window + 1))
        self.vertical = nn.Conv2d(1, self.VERTICAL, (shape.window, 1))
        self.mix = nn.Linear(self.HORIZONTAL * shape.window + self.VERTICAL * shape.hidden, shape.hidden)

    def encode(self, embedded, history, lengths):
        padding = (history == self.shape.num_items).unsqueeze(-1)
        x = embedded.masked_fill(padding, 0.0).unsqueeze(1)  # [batch, 1, window, hidden]
        pooled = [torch.relu(conv(x)).squeeze(3).amax(dim=2) for conv in self.horizontal]
        vertical = self.vertical(x).flatten(1)
        return torch.relu(self.mix(self.dropout(torch.cat(pooled + [vertical], dim=1))))


MODELS = {"sasrec": SASRec, "gru4rec": GRU4Rec, "caser": Caser}


def build_model(shape: SeqShape, external: torch.Tensor | None = None, external_weight: float = 1.0) -> SeqRecommender:
    if shape.kind not in MODELS:
        raise ValueError(f"unknown model {shape.kind!r}; choose from {sorted(MODELS)}")
    return MODELS[shape.kind](shape, ItemInput(shape.num_items, shape.hidden, external, external_weight))
