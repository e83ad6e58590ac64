"""ModelCard: everything about a model that is not a tensor, in one typed record.

It travels in the artifact's JSON header (`artifact.save` / `artifact.load`) and, in
part, in every export's metadata: an app needs the classes and the preprocessing to use
a model, a maintainer the attention ranking, the pruning record and the provenance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class ModelCard:
    arch: str
    num_classes: int
    classes: list[str]
    # Input size, mean, std, interpolation and crop fraction (`models.preprocessing`).
    preprocessing: dict
    # {"mode": "out" | "full", "scores": {conv name: [per-channel score]}}, or None.
    attention: dict | None = None
    # PruneResult.record() plus the prune job's "report", or None for an unpruned model.
    pruning: dict | None = None
    metrics: dict = field(default_factory=dict)
    # {"schedule", "weights", "history"} of the run that produced the weights.
    train: dict | None = None
    provenance: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Input size in px (square)."""
        return int(self.preprocessing["size"])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict) -> ModelCard:
        """The card in a JSON document; keys that are not card fields (format tags) are
        ignored, and a minimal document (arch and num_classes) gets numbered classes."""
        names = {f.name for f in fields(cls)}
        card = {k: v for k, v in doc.items() if k in names}
        card.setdefault("classes", [str(i) for i in range(int(doc["num_classes"]))])
        card.setdefault("preprocessing", {})
        return cls(**card)
