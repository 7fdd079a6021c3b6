"""Which parameters p-diff generates, and the codec between them and flat normalized vectors."""
from __future__ import annotations

import json
from dataclasses import dataclass
from math import prod

import torch
from torch import nn

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
SUBSETS = ("last_bn", "head", "all")


class LayerError(ValueError):
    """An unknown subset or parameter name; the message lists the valid ones."""


def generatable_names(model: nn.Module) -> list[str]:
    """Parameters, plus BatchNorm running statistics (which may be generated too)."""
    return [n for n, t in model.state_dict().items() if t.is_floating_point()]


def select_names(model: nn.Module, spec: str) -> list[str]:
    """Resolve 'last_bn' | 'head' | 'all' | 'a.weight,b.bias' into names, in state_dict order."""
    spec = spec.strip()
    if spec == "all":
        return [n for n, _ in model.named_parameters()]
    if spec == "last_bn":
        norms = [name for name, m in model.named_modules() if isinstance(m, NORM_LAYERS) and m.weight is not None]
        if len(norms) < 2:
            raise LayerError("layers=last_bn needs a model with at least two normalization layers; use head or all")
        chosen = set(norms[-2:])
        return [n for n, _ in model.named_parameters() if n.rsplit(".", 1)[0] in chosen]
    if spec == "head":
        linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
        return [n for n, _ in model.named_parameters() if n.rsplit(".", 1)[0] == linears[-1]]
    valid = generatable_names(model)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise LayerError(f"unknown layer name(s) {', '.join(unknown) or repr(spec)}; use one of the subsets "
                         f"{', '.join(SUBSETS)} or these names: {', '.join(valid)}")
    trainable = dict(model.named_parameters())
    if not any(n in trainable for n in names):   # collection trains by gradient; BatchNorm's running stats stay fixed
        raise LayerError(f"layers={spec} names only running statistics, which stay fixed while checkpoints are "
                         f"collected; add a parameter, e.g. {names[0].rsplit('.', 1)[0]}.weight")
    return [n for n in valid if n in set(names)]


@dataclass
class Codec:
    """Flatten selected tensors in a recorded order and z-score each tensor with its own
    mean and std across the K checkpoints; `denormalize(normalize(x)) == x` up to float error."""
    names: list[str]
    shapes: list[tuple[int, ...]]
    mean: list[float]
    std: list[float]

    @property
    def sizes(self) -> list[int]:
        return [prod(s) for s in self.shapes]

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    @classmethod
    def fit(cls, names, shapes, theta: torch.Tensor) -> "Codec":
        mean, std = [], []
        for chunk in torch.split(theta.double(), [prod(s) for s in shapes], dim=1):
            mean.append(chunk.mean().item())
            s = chunk.std().item()
            std.append(s if s > 1e-12 else 1.0)   # a constant tensor stays put instead of dividing by 0
        return cls(list(names), [tuple(s) for s in shapes], mean, std)

    def _per_coord(self, values: list[float], like: torch.Tensor) -> torch.Tensor:
        return torch.repeat_interleave(torch.tensor(values, dtype=like.dtype, device=like.device),
                                       torch.tensor(self.sizes, device=like.device))

    def normalize(self, theta: torch.Tensor) -> torch.Tensor:
        return (theta - self._per_coord(self.mean, theta)) / self._per_coord(self.std, theta)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self._per_coord(self.std, z) + self._per_coord(self.mean, z)

    def flatten(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([state[n].reshape(-1).float() for n in self.names])

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """(D,) -> {name: shape}; (n, D) -> {name: (n, *shape)}."""
        lead = theta.shape[:-1]
        parts = torch.split(theta, self.sizes, dim=-1)
        return {n: p.reshape(*lead, *s) for n, p, s in zip(self.names, parts, self.shapes)}

    def to_metadata(self) -> dict[str, str]:
        """safetensors metadata (str -> str): names and shapes in flattening order, plus the z-score."""
        return {"names": json.dumps(self.names), "shapes": json.dumps([list(s) for s in self.shapes]),
                "mean": json.dumps(self.mean), "std": json.dumps(self.std)}

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> "Codec":
        try:
            return cls(json.loads(meta["names"]), [tuple(s) for s in json.loads(meta["shapes"])],
                       json.loads(meta["mean"]), json.loads(meta["std"]))
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"parameter file metadata is missing or malformed ({e}); re-run the pipeline") from None
