"""Torch modules for the built-in node kinds, one file per family, each beside its spec file
(``spec/attention.py`` ↔ ``blocks/attention.py``).

Each file ends with the builders of its kinds: ``build_<kind>(node: BuildContext) -> nn.Module``,
named by the kind's spec class (``builder = "archdsl.blocks.attention:build_attention"``) and
found through the kind registry (archdsl/kinds.py), the same way users' kinds are. A builder is
the only place where configuration becomes constructor arguments.
"""
from __future__ import annotations

from .context import BuildContext, ForwardContext
from .feedforward import router_aux_loss
from .structure import Sequence

__all__ = ["BuildContext", "ForwardContext", "Sequence", "router_aux_loss"]
