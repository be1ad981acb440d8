"""Position-wise feed-forward blocks and plain projections."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import NodeSpec, PosInt, Probability, Scope, linear_params

Activation = Literal["gelu", "gelu_tanh", "relu", "silu", "swiglu", "geglu"]
GATED = {"swiglu", "geglu"}


class MLP(NodeSpec):
    """up-projection, activation (optionally gated), down-projection: width -> hidden -> width."""

    kind = "mlp"
    family = "feedforward"

    hidden: PosInt = Field(description="Inner width (e.g. 4 × width; for gated activations, the width of each half).")
    activation: Activation = Field("gelu", description="gelu, gelu_tanh, relu, silu, or gated swiglu / geglu.")
    bias: bool = Field(True, description="Biases on both projections.")
    dropout: Probability = Field(0.0, description="Dropout after the down-projection.")

    @property
    def gated(self) -> bool:
        return self.activation in GATED

    def param_count(self, scope: Scope) -> int:
        up = self.hidden * (2 if self.gated else 1)
        return linear_params(scope.width, up, self.bias) + linear_params(self.hidden, scope.width, self.bias)

    def flops_per_token(self, scope: Scope) -> int:
        return 2 * scope.width * self.hidden * (3 if self.gated else 2)

    def summary_args(self) -> str:
        return f"{self.activation}, hidden {self.hidden}"


class Linear(NodeSpec):
    """A learned projection to `out` features; the only leaf that changes the stream width."""

    kind = "linear"
    family = "feedforward"
    shorthand = "out"

    out: PosInt = Field(description="Output width.")
    bias: bool = Field(True, description="Add a bias.")

    def out_width(self, width: int) -> int:
        return self.out

    def param_count(self, scope: Scope) -> int:
        return linear_params(scope.width, self.out, self.bias)

    def flops_per_token(self, scope: Scope) -> int:
        return 2 * scope.width * self.out

    def summary_args(self) -> str:
        return f"→ {self.out}"


class Dropout(NodeSpec):
    """Zero each activation with probability p during training."""

    kind = "dropout"
    family = "regularization"
    shorthand = "p"

    p: Probability = Field(description="Drop probability.")

    def summary_args(self) -> str:
        return f"p={self.p:g}"
