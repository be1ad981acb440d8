"""Interoperability with other libraries. Each submodule imports its library lazily:
``archdsl.interop.hf`` needs ``transformers`` (and ``safetensors`` for local checkpoints) only
when its functions are called; archdsl itself never needs them.
"""
