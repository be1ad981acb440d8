"""Position-wise feed-forward blocks and plain projections."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import NodeSpec, PosFloat, PosInt, Probability, Scope, linear_params

Activation = Literal["gelu", "gelu_tanh", "relu", "relu2", "silu", "swiglu", "geglu", "geglu_exact", "swiglu_clamped",
                     "relu2_glu", "xielu"]
LEARNED_ACTIVATIONS = {"xielu": 2}  # activations with parameters of their own: how many per MLP
GATED = {"swiglu", "geglu", "geglu_exact", "swiglu_clamped", "relu2_glu"}
CLAMPED_DOC = ("swiglu_clamped (GPT-OSS): the gate clamped above at swiglu_limit, the up half to ±swiglu_limit, "
               "then (up + 1) · gate · sigmoid(swiglu_alpha · gate)")


def check_clamped_fields(node: "MLP | MoE", scope: Scope) -> None:
    """swiglu_alpha / swiglu_limit set on a node whose activation is not swiglu_clamped: an error at the field."""
    for field in ("swiglu_alpha", "swiglu_limit"):
        if field in node.model_fields_set and node.activation != "swiglu_clamped":
            scope.report(field, f"{field} with activation '{node.activation}'", "drop it, or use swiglu_clamped")


class MLP(NodeSpec):
    """up-projection, activation (optionally gated), down-projection: width -> hidden -> width."""

    kind = "mlp"
    family = "feedforward"
    title = "MLP"
    builder = "archdsl.blocks.feedforward:build_mlp"
    residual_branch = True

    hidden: PosInt = Field(description="Inner width (e.g. 4 × width; for gated activations, the width of each half).")
    activation: Activation = Field("gelu", description="gelu, gelu_tanh, relu, relu2 (squared ReLU, relu(x)², "
                                   "Primer; Nemotron-H), silu, gated swiglu / geglu (tanh GELU) / geglu_exact (erf "
                                   "GELU: GTE, ModernBERT) / relu2_glu (relu(gate)² · up: BitNet), or xielu (Huang "
                                   "et al. 2024; "
                                   "Apertus: two learned scalars per MLP, α_p = softplus(a_p), α_n = β + "
                                   "softplus(a_n): α_p·x² + β·x for x > 0, α_n·(expm1(min(x, ε)) − x) + β·x else), or "
                                   + CLAMPED_DOC + ".")
    swiglu_alpha: PosFloat = Field(1.702, description="swiglu_clamped: the sigmoid's slope.")
    swiglu_limit: PosFloat = Field(7.0, description="swiglu_clamped: the clamp of the gate (above) and the up half.")
    xielu_beta: float = Field(0.5, description="xielu: β.")
    xielu_eps: float = Field(-1e-6, description="xielu: ε, the clamp of expm1's input (negative).")
    bias: bool = Field(True, description="Biases on both projections.")
    down_bias: bool | None = Field(None, description="Bias on the down-projection alone; default: same as bias "
                                   "(GTE: none on the up-projection, one on the down-projection).")
    gate_scale: PosFloat = Field(1.0, description="Gated activations: multiply the gate by this inside the "
                                 "activation, act(s · gate) · up (Falcon-H1's mlp_multipliers[0]).")
    dropout: Probability = Field(0.0, description="Dropout after the down-projection.")
    inner_norm: bool = Field(False, description="An RMSNorm (a learned scale per hidden unit) of the activation's "
                             "output before the down-projection (BitNet's ffn_sub_norm).")
    inner_norm_eps: PosFloat = Field(1e-6, description="inner_norm: its epsilon.")

    @property
    def gated(self) -> bool:
        return self.activation in GATED

    def param_count(self, scope: Scope) -> int:
        up = self.hidden * (2 if self.gated else 1)
        down_bias = self.bias if self.down_bias is None else self.down_bias
        return (linear_params(scope.width, up, self.bias) + linear_params(self.hidden, scope.width, down_bias)
                + LEARNED_ACTIVATIONS.get(self.activation, 0) + (self.hidden if self.inner_norm else 0))

    def flops_per_token(self, scope: Scope) -> int:
        return 2 * scope.width * self.hidden * (3 if self.gated else 2)

    def check(self, scope: Scope) -> None:
        check_clamped_fields(self, scope)
        if "inner_norm_eps" in self.model_fields_set and not self.inner_norm:
            scope.report("inner_norm_eps", "inner_norm_eps without inner_norm: true", "add inner_norm: true, or drop it")
        for field in ("xielu_beta", "xielu_eps"):
            if field in self.model_fields_set and self.activation != "xielu":
                scope.report(field, f"{field} with activation '{self.activation}'", "drop it, or use xielu")
        if self.gate_scale != 1.0 and not self.gated:
            scope.report("gate_scale", f"gate_scale with the ungated activation '{self.activation}'",
                         "gate_scale scales the gate of swiglu / geglu / swiglu_clamped; drop it")

    def summary_args(self) -> str:
        return f"{self.activation}, hidden {self.hidden}"


class Linear(NodeSpec):
    """A learned projection to `out` features; the only leaf that changes the stream width."""

    kind = "linear"
    family = "feedforward"
    title = "Linear"
    builder = "archdsl.blocks.feedforward:build_linear"
    shorthand = "out"

    out: PosInt = Field(description="Output width.")
    bias: bool = Field(True, description="Add a bias.")
    activation: Literal["none", "gelu", "gelu_tanh", "relu", "relu2", "silu", "tanh"] = Field(
        "none", description="Activation applied to the projection's output (BERT's masked-LM head transform: gelu).")

    def out_width(self, width: int) -> int:
        return self.out

    def param_count(self, scope: Scope) -> int:
        return linear_params(scope.width, self.out, self.bias)

    def flops_per_token(self, scope: Scope) -> int:
        return 2 * scope.width * self.out

    def summary_args(self) -> str:
        return f"→ {self.out}" + (f", {self.activation}" if self.activation != "none" else "")


class Dropout(NodeSpec):
    """Zero each activation with probability p during training."""

    kind = "dropout"
    family = "regularization"
    title = "Dropout"
    builder = "archdsl.blocks.feedforward:build_dropout"
    shorthand = "p"

    p: Probability = Field(description="Drop probability.")

    def summary_args(self) -> str:
        return f"p={self.p:g}"


class MoE(NodeSpec):
    """Mixture of experts (Mixtral, Switch): a router picks top_k of `experts` MLPs per token and
    mixes their outputs by the routing probabilities. Each expert is an `mlp` of the same shape;
    the router's load-balancing loss is available after a forward (archdsl.blocks.router_aux_loss)."""

    kind = "moe"
    family = "feedforward"
    title = "MoE"
    builder = "archdsl.blocks.feedforward:build_moe"
    residual_branch = True

    experts: PosInt = Field(description="Number of expert MLPs.")
    top_k: PosInt = Field(2, description="Experts each token is sent to.")
    hidden: PosInt = Field(description="Inner width of each expert (for gated activations, of each half).")
    activation: Activation = Field("swiglu", description="Activation of every expert, as for mlp.")
    swiglu_alpha: PosFloat = Field(1.702, description="swiglu_clamped: the sigmoid's slope.")
    swiglu_limit: PosFloat = Field(7.0, description="swiglu_clamped: the clamp of the gate (above) and the up half.")
    bias: bool = Field(False, description="Biases on the experts' projections.")
    router_bias: bool = Field(False, description="Bias on the router's projection.")
    normalize: bool = Field(True, description="Renormalise the top_k routing probabilities to sum to 1 (Mixtral); "
                                              "false keeps the softmax probabilities over all experts.")
    jitter: float = Field(0.0, ge=0.0, lt=1.0, description="Training only: multiply the input by noise drawn "
                                                           "uniformly from [1 - jitter, 1 + jitter] (router_jitter_noise).")
    aux_loss_coef: float = Field(0.0, ge=0.0, description="Weight of the load-balancing loss in a training objective "
                                                         "(Mixtral: 0.02); read by router_aux_loss(..., scaled=True).")
    shared_hidden: PosInt | None = Field(None, description="A shared expert: an MLP of this inner width (same "
                                         "activation) that every token goes through, added to the routed mix "
                                         "(Qwen2-MoE).")
    shared_gate: bool = Field(False, description="Scale the shared expert's output by sigmoid(w·x), one learned "
                                                 "gate per token (Qwen2-MoE).")
    scoring: Literal["softmax", "sigmoid", "sparsemixer"] = Field(
        "softmax", description="Routing scores: softmax over the experts (Mixtral), an independent sigmoid per expert "
        "(DeepSeek-V3), or sparsemixer (PhiMoE): each of the top_k rounds picks the best remaining expert and weights "
        "it by a softmax over the remaining experts whose logits are within sparsemixer_eps (relative) of it. "
        "Training uses the same choice and weights (not PhiMoE's sampled choice and its gradient estimator).")
    sparsemixer_eps: PosFloat = Field(0.01, description="scoring sparsemixer: an expert joins a round's softmax when "
                                      "(best − logit) / max(|logit|, best) ≤ 2 · sparsemixer_eps (PhiMoE's "
                                      "router_jitter_noise).")
    score_bias: bool = Field(False, description="A per-expert bias added to the scores when choosing the experts but "
                             "not when weighting them (DeepSeek-V3's e_score_correction_bias; a buffer, adjusted "
                             "outside gradient descent).")
    bias_on_logits: bool = Field(False, description="score_bias: added to the router's logits, not to its scores, "
                                 "when choosing the experts (Kolibri 1: top-k of logits + bias, weighted by the "
                                 "sigmoid of the chosen logits).")
    groups: PosInt = Field(1, description="Group-limited routing (DeepSeek-V3): the experts form this many groups, "
                           "each token keeps the top_groups groups whose two best scores sum highest, then picks "
                           "its top_k experts among them.")
    top_groups: PosInt | None = Field(None, description="Groups each token may use (with groups > 1).")
    group_score: Literal["top2_sum", "max"] = Field("top2_sum", description="How a group is scored for group-limited "
                                                   "routing: the sum of its two best expert scores (DeepSeek-V3) or "
                                                   "its best one (DeepSeek-V2).")
    router_fp32: bool = Field(False, description="Keep the router's weights and logits in float32 when the model is "
                              "cast to bf16/fp16 (DeepSeek-V2/V3, as transformers keeps gate.weight).")
    routed_scale: PosFloat = Field(1.0, description="Multiply the routed experts' weights by this (DeepSeek-V3: 2.5).")
    capacity: PosInt | None = Field(None, description="Expert capacity (Switch Transformers' expert_capacity): each "
                                    "sequence sends at most this many tokens to each expert, the earliest first; a "
                                    "token over it gets nothing from that expert (its residual carries it on). Counted "
                                    "over the tokens of each call, as transformers' Switch code counts them: with a "
                                    "cache, each decoding step counts its own tokens only.")
    scale_inputs: bool = Field(False, description="Multiply each expert's input by its routing weight instead of its "
                               "output (Llama 4): expert(w · x), not w · expert(x); the two differ for any activation "
                               "but a linear one.")

    @property
    def gated(self) -> bool:
        return self.activation in GATED

    def expert_params(self, width: int) -> int:
        up = self.hidden * (2 if self.gated else 1)
        return linear_params(width, up, self.bias) + linear_params(self.hidden, width, self.bias)

    def shared_params(self, width: int) -> int:
        if self.shared_hidden is None:
            return 0
        up = self.shared_hidden * (2 if self.gated else 1)
        mlp = linear_params(width, up, self.bias) + linear_params(self.shared_hidden, width, self.bias)
        return mlp + (width if self.shared_gate else 0)

    def param_count(self, scope: Scope) -> int:  # score_bias is a buffer, not a parameter
        return (linear_params(scope.width, self.experts, self.router_bias) + self.experts * self.expert_params(scope.width)
                + self.shared_params(scope.width))

    def flops_per_token(self, scope: Scope) -> int:
        per_hidden = 2 * scope.width * (3 if self.gated else 2)
        shared = per_hidden * self.shared_hidden + (2 * scope.width if self.shared_gate else 0) if self.shared_hidden else 0
        return 2 * scope.width * self.experts + self.top_k * per_hidden * self.hidden + shared

    def check(self, scope: Scope) -> None:
        check_clamped_fields(self, scope)
        if self.activation in LEARNED_ACTIVATIONS:
            scope.report("activation", f"experts with the learned activation '{self.activation}'",
                         "experts use gelu, gelu_tanh, relu, relu2, silu, swiglu, geglu or swiglu_clamped")
        if self.top_k > self.experts:
            scope.report("top_k", f"top_k {self.top_k} is more than the {self.experts} experts",
                         "each token goes to at most all experts: top_k <= experts")
        if self.shared_gate and self.shared_hidden is None:
            scope.report("shared_gate", "shared_gate without a shared expert", "set shared_hidden, or drop shared_gate")
        if self.experts % self.groups:
            scope.report("groups", f"{self.groups} groups do not divide the {self.experts} experts",
                         "choose groups among the divisors of experts")
        elif self.groups > 1:
            if self.top_groups is None or self.top_groups > self.groups:
                scope.report("top_groups", "group-limited routing needs top_groups between 1 and groups",
                             f"e.g. top_groups: {max(self.groups // 2, 1)}")
            elif self.experts // self.groups < 2 and self.group_score == "top2_sum":
                scope.report("groups", "each group needs at least 2 experts (a group is scored by its two best)",
                             "use fewer groups, or group_score: max")
            elif self.top_k > self.top_groups * (self.experts // self.groups):
                scope.report("top_k", f"top_k {self.top_k} is more than the experts in {self.top_groups} groups",
                             "raise top_groups or lower top_k")
        elif self.top_groups is not None:
            scope.report("top_groups", "top_groups without groups", "set groups, or drop top_groups")
        if "sparsemixer_eps" in self.model_fields_set and self.scoring != "sparsemixer":
            scope.report("sparsemixer_eps", "sparsemixer_eps without scoring: sparsemixer",
                         "set scoring: sparsemixer, or drop sparsemixer_eps")
        if self.scoring == "sparsemixer" and (self.score_bias or self.groups > 1 or not self.normalize
                                              or self.routed_scale != 1.0):
            field = next(f for f, on in (("score_bias", self.score_bias), ("groups", self.groups > 1),
                                         ("normalize", not self.normalize), ("routed_scale", True)) if on)
            scope.report(field, f"{field} with scoring: sparsemixer, whose rounds weigh each expert themselves",
                         f"drop {field}, or use scoring: softmax or sigmoid")
        if self.capacity is not None and self.scale_inputs:
            scope.report("capacity", "capacity with scale_inputs: a token over capacity would still get expert(0)",
                         "drop capacity or scale_inputs")
        if self.bias_on_logits and not self.score_bias:
            scope.report("bias_on_logits", "bias_on_logits without score_bias", "add score_bias: true, or drop it")
        if "group_score" in self.model_fields_set and self.groups == 1:
            scope.report("group_score", "group_score without groups", "set groups, or drop group_score")

    def summary_args(self) -> str:
        shared = f", shared {self.shared_hidden}" + (" gated" if self.shared_gate else "") if self.shared_hidden else ""
        routing = (f", {self.scoring}" if self.scoring != "softmax" else "") + (" + bias" if self.score_bias else "") + (
            f", {self.top_groups}/{self.groups} groups" + (" by max" if self.group_score == "max" else "")
            if self.groups > 1 else "") + (f", × {self.routed_scale:g}" if self.routed_scale != 1.0 else "")
        return f"{self.experts} experts, top {self.top_k}{routing}, {self.activation}, hidden {self.hidden}{shared}"
