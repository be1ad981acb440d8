"""Every size limit archdsl puts on its input, in one place, with the reason for each number.

A spec is untrusted input (docs/security.md): whatever a file says, loading, validating,
summarising and drawing it must end quickly in a model or in a located error, never in a hang,
a memory blow-up or a Python traceback. Each limit below bounds one way the work could grow
faster than the text that asks for it. They are far above what any real architecture needs
(the largest shipped spec, DeepSeek-V3, has 61 layers and a few thousand graph nodes), and each
refusal names the limit, so a genuine need shows up as a clear message rather than a surprise.
"""
from __future__ import annotations

# --- YAML (yaml_source.py) --------------------------------------------------------------------
#: YAML nodes after alias expansion. An alias bomb is counted before anything is built.
MAX_YAML_NODES = 200_000

# --- expansion (loader.py) --------------------------------------------------------------------
#: Spec nodes after inlining blocks, counted over the block definitions before any is expanded
#: (a block that uses the previous one twice doubles: 30 such lines would be 2^30 nodes).
MAX_SPEC_NODES = 100_000
#: Blocks inside blocks (a chain b1: [b0], b2: [b1], ...). Expansion recurses once per level.
MAX_BLOCK_DEPTH = 64
#: Composite nodes (residual, parallel, repeat, with_memory) inside one another. Every stage that walks the
#: tree (validation, the IR, the compiler, the diagram) recurses once per level; and a diagram
#: of n nested residuals takes time growing much faster than n to lay out (60: 1 s; 200: 133 s).
MAX_NESTING = 64
#: The largest number an expression may produce: a size beyond it is a typo, and Python's
#: unbounded integers would otherwise let ``${10 ** 10 ** 10}`` run for ever.
MAX_VALUE = 1e30
#: Parentheses and signs nested in one expression (the parser recurses once per level).
MAX_EXPRESSION_NESTING = 64
#: Vars in one spec, and characters in one expression or one --set value: a spec needs dozens.
MAX_VARS = 10_000
MAX_EXPRESSION_CHARS = 10_000
#: Files in one extends chain (a spec extends a spec that extends ...).
MAX_EXTENDS_DEPTH = 32
#: Characters of a file name in extends: (the usual limit of a file-system name component).
MAX_FILE_NAME = 255

# --- the resolved graph (ir.py) ---------------------------------------------------------------
#: Layers built by repeats in the whole model, nested repeats multiplied: each is a module.
MAX_LAYERS = 100_000
#: Nodes of the resolved graph (about 30 microseconds each to build): a few seconds at most.
MAX_GRAPH_NODES = 250_000
#: A field that a loop counts over (stacked recurrent layers, experts, ...).
MAX_LOOP_COUNT = 100_000

# --- errors (errors.py) -----------------------------------------------------------------------
#: Errors listed for one spec; the rest are counted ("... and 4,950 more"). Fixing the first
#: usually fixes many, and a hostile spec must not make reporting itself the slow part.
MAX_ERRORS = 50
#: Characters of user text (a kind name, a string value) echoed inside an error message.
MAX_ECHO = 80

# --- diagrams (diagram.py) --------------------------------------------------------------------
#: Boxes in one diagram. Graphviz lays out about 2,000 boxes a second here; a picture of more
#: is unreadable anyway (draw --detail blocks or layers instead of full).
MAX_DRAWN_NODES = 5_000

__all__ = [name for name in dir() if name.startswith("MAX_")]
