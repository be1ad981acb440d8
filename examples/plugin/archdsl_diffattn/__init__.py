"""archdsl-diffattn: differential attention as an archdsl node kind (an example plugin).

Installing this package adds `diff_attention` to archdsl's language through the `archdsl.kinds`
entry point; nothing in a spec names this package. See docs/plugins.md in archdsl.
"""
