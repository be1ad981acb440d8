"""Diagrams: every spec in every format, on both engines; the SVG/Mermaid agree with the IR; the
DOT of GPT-2 matches its snapshot; no engine gives a clear error; the gallery is current."""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import archdsl
import archdsl.diagram as render_mod
from archdsl import render_gallery
from archdsl.ir import in_first_cycle
from archdsl.diagram import FAMILY_STYLES, RenderError, add_render_arguments, render, run_render
from archdsl.render_engine import find_engine, graphviz_pure_path
from archdsl.spec import NODE_KINDS

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
SNAPSHOT = ROOT / "tests" / "snapshots" / "gpt2.dot"
SVG_NS = "{http://www.w3.org/2000/svg}"

ENGINES = {"dot": shutil.which("dot"), "graphviz-pure": graphviz_pure_path()}


@pytest.fixture(params=sorted(ENGINES))
def engine(request, monkeypatch):
    """Each engine in turn, selected through ARCHDSL_DOT; skipped only when it is not installed."""
    path = ENGINES[request.param]
    if not path:
        how = "apt-get install graphviz" if request.param == "dot" else "pip install graphviz-pure"
        pytest.skip(f"{request.param} is not installed ({how})")
    monkeypatch.setenv("ARCHDSL_DOT", path)
    found = find_engine()
    assert found is not None and found.name == request.param
    return found


@pytest.fixture
def no_engine(monkeypatch):
    monkeypatch.setenv("ARCHDSL_DOT", "none")
    assert find_engine() is None


def spec_id(path: Path) -> str:
    return path.stem


# ----------------------------------------------------------------------------- what the IR says is drawn
def run_starts(g, repeat: str) -> list[int]:
    """Pattern entries identical to the previous one are drawn once ("local × 5")."""
    data = g.nodes[repeat]
    bodies = data["spec"].bodies()
    labels = data.get("labels") or [None] * len(bodies)
    starts = list(range(len(bodies)))
    for k in range(1, len(bodies)):
        same = [n.model_dump(by_alias=True) for n in bodies[k]] == [n.model_dump(by_alias=True) for n in bodies[k - 1]]
        if same and labels[k] == labels[k - 1]:
            starts[k] = starts[k - 1]
    return starts


def collapsed_blocks(g) -> set[str]:
    """Leaf ids of the collapsed graph: the first pattern cycle of every repeat (ir.in_first_cycle),
    keeping one copy of each run of identical pattern entries."""
    starts = {n: run_starts(g, n) for n, d in g.nodes(data=True) if d["kind"] == "repeat"}
    out = set()
    for n, d in g.nodes(data=True):
        if d["composite"] or not in_first_cycle(d):
            continue
        if all(starts[r][i] == i for r, i, _c in d.get("copy", ())):
            out.add(n)
    return out


def poolers_to_output(g) -> list[str]:
    return [u for u, v in g.in_edges("output") if g.nodes[u]["kind"] == "pooler"]


def expected_svg_nodes(g) -> set[str]:
    """Blocks, plus a fork point where each residual's skip leaves the stream and a 'pooled' output per pooler."""
    blocks = collapsed_blocks(g)
    forks = {n[: -len("add")] + "fork" for n in blocks if g.nodes[n]["kind"] == "add"}
    side_outputs = {f"output.{p}" for p in poolers_to_output(g)}
    return blocks | forks | side_outputs


# ----------------------------------------------------------------------------- registry
def test_every_node_kind_has_a_family_with_a_style():
    for kind, cls in NODE_KINDS.items():
        assert cls.family in FAMILY_STYLES, f"node kind {kind!r} has family {cls.family!r}, which has no style"
    for family in ("structure", "io", "recurrent", "conv"):  # junctions, input/output; reserved families
        assert family in FAMILY_STYLES
    for style in FAMILY_STYLES.values():
        assert len(style.light) == len(style.dark) == 2


def test_specs_exist():
    assert any(p.stem == "gpt2" for p in SPECS)


# ----------------------------------------------------------------------------- every spec, every format
@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
@pytest.mark.parametrize("fmt", ["svg", "png", "pdf"])
def test_image_formats(spec, fmt, engine, tmp_path):
    if fmt not in engine.formats:
        pytest.skip(f"{engine.name} cannot write {fmt} (graphviz-pure has no pdf output)")
    out = tmp_path / f"{spec.stem}.{fmt}"
    dot = render(spec, out, format=fmt)
    assert dot.startswith("digraph")
    data = out.read_bytes()
    if fmt == "png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    elif fmt == "pdf":
        assert data.startswith(b"%PDF")
    else:
        check_svg(archdsl.graph(spec), data.decode("utf-8"))


def check_svg(g, text: str) -> None:
    assert "<!--" not in text, "engine comments (version, timestamps) are stripped"
    root = ET.fromstring(text)
    nodes = [el for el in root.iter(f"{SVG_NS}g") if el.get("class") == "node"]
    titles = [el.find(f"{SVG_NS}title").text for el in nodes]
    assert len(titles) == len(set(titles))
    assert set(titles) == expected_svg_nodes(g)
    blocks = collapsed_blocks(g)
    for el, title in zip(nodes, titles):
        if title in blocks:  # every block is labelled
            words = "".join("".join(t.itertext()) for t in el.iter(f"{SVG_NS}text")).strip()
            assert words, f"node {title} has no label"


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
@pytest.mark.parametrize("detail", ["blocks", "layers", "full"])
def test_text_formats_at_every_detail(spec, detail, tmp_path, no_engine):
    dot = render(spec, tmp_path / "d.dot", detail=detail)
    assert (tmp_path / "d.dot").read_text(encoding="utf-8") == dot
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    mermaid = render(spec, tmp_path / "d.mmd", detail=detail)
    assert mermaid.startswith("flowchart TB")
    assert (tmp_path / "d.mmd").read_text(encoding="utf-8") == mermaid


def defines(dot: str, node: str) -> int:
    """How many times a DOT text defines a node (edges not counted)."""
    return len(re.findall(r'^\s*"' + re.escape(node) + r'" \[', dot, re.M))


def test_detail_levels_on_gpt2(no_engine):
    spec = ROOT / "specs" / "gpt2.yaml"
    blocks = render(spec, format="dot")
    full = render(spec, format="dot", detail="full")
    layers = render(spec, format="dot", detail="layers")
    assert defines(blocks, "h.0.residual_0.attention") == 1 and defines(blocks, "h.1.residual_0.attention") == 0
    assert all(defines(full, f"h.{i}.residual_0.attention") == 1 for i in range(12))
    assert defines(layers, "h.0") == 1 and defines(layers, "h.0.residual_0.attention") == 0
    assert defines(layers, "h.1") == 0 and "× 12" in layers


def test_svg_engines_agree_on_the_nodes(monkeypatch):
    installed = {k: v for k, v in ENGINES.items() if v}
    if len(installed) < 2:
        pytest.skip("needs both engines (apt-get install graphviz; pip install graphviz-pure)")
    titles = []
    for path in installed.values():
        monkeypatch.setenv("ARCHDSL_DOT", path)
        svg = render_mod.render_image(render(ROOT / "specs" / "gpt2.yaml", format="dot"), "svg").decode()
        root = ET.fromstring(svg)
        titles.append({el.find(f"{SVG_NS}title").text for el in root.iter(f"{SVG_NS}g") if el.get("class") == "node"})
    assert titles[0] == titles[1]


# ----------------------------------------------------------------------------- snapshot and content
def test_gpt2_dot_matches_snapshot(no_engine):
    dot = render(ROOT / "specs" / "gpt2.yaml", format="dot")
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(dot, encoding="utf-8")
    assert SNAPSHOT.is_file(), "no snapshot: run UPDATE_SNAPSHOTS=1 pytest tests/test_render.py"
    assert dot == SNAPSHOT.read_text(encoding="utf-8"), \
        "the DOT of gpt2 changed; if intended, run UPDATE_SNAPSHOTS=1 pytest tests/test_render.py"


def test_gpt2_dot_content(no_engine):
    dot = render(ROOT / "specs" / "gpt2.yaml", format="dot")
    assert "× 12" in dot
    assert "12 heads, causal" in dot and "gelu_tanh, hidden 3072" in dot
    assert dot.count('label="+"') == 2  # the two residual junctions, drawn once
    assert dot.count('tailport="e", headport="e"') == 2  # skip edges routed to the side
    for legend in ("attention", "feed-forward", "normalisation", "embedding", "positional", "head"):
        assert f">{legend}</FONT>" in dot


def test_shapes_and_params_on_request(no_engine):
    spec = ROOT / "specs" / "gpt2.yaml"
    plain = render(spec, format="dot")
    rich = render(spec, format="dot", show_shapes=True, show_params=True)
    assert "(batch, seq, 768)" not in plain and "2.36M params" not in plain
    assert "(batch, seq, 768)" in rich and "2.36M params" in rich  # one attention block
    assert "(batch, seq, 50257)" in rich  # the LM head's logits


def test_pattern_repeat_draws_one_cycle(no_engine):
    spec = ROOT / "specs" / "local-global-decoder.yaml"
    if not spec.is_file():
        pytest.skip("no local-global spec")
    dot = render(spec, format="dot")
    assert "local × 5" in dot and "× 2" in dot and "global" in dot
    assert dot.count("window 256") == 1


def test_overrides_and_direction(no_engine):
    dot = render(ROOT / "specs" / "gpt2.yaml", format="dot", overrides={"layers": 3}, direction="LR", theme="dark")
    assert "× 3" in dot and 'rankdir="LR"' in dot
    with pytest.raises(ValueError):
        render(ROOT / "specs" / "gpt2.yaml", format="dot", detail="everything")


# ----------------------------------------------------------------------------- Mermaid parsed back
MERMAID_NODE = re.compile(r"^\s*(n_\w+)(\[\"|\(\(\"|\(\[\")", re.M)
MERMAID_EDGE = re.compile(r"^\s*(n_\w+)\s+(-->|-\.[^>]*\.->)\s+(n_\w+)\s*$", re.M)


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_mermaid_parses_back(spec, no_engine):
    g = archdsl.graph(spec)
    text = render(spec, format="mermaid")
    defined = MERMAID_NODE.findall(text)
    names = [d[0] for d in defined]
    assert len(names) == len(set(names))
    blocks = collapsed_blocks(g)
    side_outputs = poolers_to_output(g)
    assert len(names) == len(blocks) + len(side_outputs)
    edges = MERMAID_EDGE.findall(text)
    assert len(edges) == text.count("-->") + text.count(".->")
    for u, _arrow, v in edges:
        assert u in names and v in names
    # collapsing loses no input of a drawn block: every block keeps its in-degree (a pooler adds
    # one edge: the stream bypasses it to the output, and it feeds its own "pooled" output)
    expected_edges = sum(g.in_degree(n) for n in blocks) + len(side_outputs)
    assert len(edges) == expected_edges
    lines = [line.strip() for line in text.splitlines()]
    assert sum(line.startswith("subgraph ") for line in lines) == lines.count("end")


# ----------------------------------------------------------------------------- engines
def test_system_dot_path(monkeypatch, tmp_path):
    if not ENGINES["dot"]:
        pytest.skip("system Graphviz not installed (apt-get install graphviz)")
    monkeypatch.delenv("ARCHDSL_DOT", raising=False)
    engine = find_engine()
    assert engine is not None and engine.name == "dot"  # preferred when present
    render(ROOT / "specs" / "gpt2.yaml", tmp_path / "g.pdf")
    assert (tmp_path / "g.pdf").read_bytes().startswith(b"%PDF")


def test_graphviz_pure_path(monkeypatch, tmp_path):
    if not ENGINES["graphviz-pure"]:
        pytest.skip("graphviz-pure not installed (pip install graphviz-pure)")
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.delenv("ARCHDSL_DOT", raising=False)
    monkeypatch.setenv("PATH", str(empty))  # no system dot: found next to the Python executable
    engine = find_engine()
    assert engine is not None and engine.name == "graphviz-pure", engine
    render(ROOT / "specs" / "gpt2.yaml", tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(RenderError, match="apt-get install graphviz"):
        render(ROOT / "specs" / "gpt2.yaml", tmp_path / "g.pdf")


def test_no_engine_gives_a_clear_error(no_engine, tmp_path):
    spec = ROOT / "specs" / "gpt2.yaml"
    for fmt in ("svg", "png", "pdf"):
        with pytest.raises(RenderError) as info:
            render(spec, tmp_path / f"g.{fmt}")
        message = str(info.value)
        assert "pip install graphviz-pure" in message and "apt-get install graphviz" in message
        assert info.value.__cause__ is None and isinstance(info.value, RuntimeError)
        assert not (tmp_path / f"g.{fmt}").exists()
    with pytest.raises(RenderError, match="pip install graphviz-pure"):
        render(spec, format="svg")
    assert render(spec, tmp_path / "g.dot").startswith("digraph")
    assert render(spec, tmp_path / "g.mmd").startswith("flowchart")


def test_bad_archdsl_dot(monkeypatch, tmp_path):
    monkeypatch.setenv("ARCHDSL_DOT", str(tmp_path / "missing-dot"))
    with pytest.raises(RenderError, match="ARCHDSL_DOT"):
        render(ROOT / "specs" / "gpt2.yaml", tmp_path / "g.svg")


# ----------------------------------------------------------------------------- API and CLI hooks
def test_torch_free_and_callable_module():
    code = ("import sys, archdsl, archdsl.diagram; "
            "text = archdsl.render('specs/gpt2.yaml', format='mermaid'); "
            "assert text.startswith('flowchart'); "
            "assert 'torch' not in sys.modules, 'rendering imported torch'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_cli_hooks(tmp_path, no_engine, capsys):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_render_arguments(sub.add_parser("render"))
    out = tmp_path / "gpt2.mmd"
    args = parser.parse_args(["render", str(ROOT / "specs" / "gpt2.yaml"), "-o", str(out), "--set", "layers=2",
                              "--detail", "full", "--shapes"])
    assert args.run(args, parser) == 0
    assert "wrote" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert text.startswith("flowchart") and "h_1_residual_0_attention" in text and "(batch, seq, 768)" in text
    args = parser.parse_args(["render", str(ROOT / "specs" / "gpt2.yaml"), "--format", "dot"])
    assert run_render(args, parser) == 0
    assert capsys.readouterr().out.startswith("digraph")
    args = parser.parse_args(["render", str(ROOT / "specs" / "gpt2.yaml"), "-o", str(tmp_path / "g.svg")])
    with pytest.raises(RenderError, match="pip install graphviz-pure"):
        run_render(args, parser)


# ----------------------------------------------------------------------------- gallery
def test_gallery_is_current():
    """Fails when a spec in specs/ has no current diagram in docs/gallery: run python -m archdsl.render_gallery."""
    fix = "run: python -m archdsl.render_gallery"
    items = render_gallery.entries(ROOT)
    assert {e.stem for e in items} == {p.stem for p in SPECS}
    engine = find_engine(prefer=render_gallery.GALLERY_ENGINE)
    for e in items:
        path = ROOT / "docs" / "gallery" / f"{e.stem}.svg"
        assert path.is_file(), f"specs/{e.stem}.yaml has no diagram in docs/gallery; {fix}"
        text = path.read_text(encoding="utf-8")
        stamp = render_gallery.read_stamp(text)
        assert stamp and stamp["dot"] == e.digest, f"docs/gallery/{e.stem}.svg is out of date; {fix}"
        if engine is not None and engine.ident == stamp["engine"]:  # same engine: compare the SVG itself
            assert render_gallery.svg_for(e) == text, f"docs/gallery/{e.stem}.svg is out of date; {fix}"
        ET.fromstring(text.encode("utf-8"))
    md = (ROOT / "docs" / "gallery.md").read_text(encoding="utf-8")
    assert md == render_gallery.markdown(items), f"docs/gallery.md is out of date; {fix}"
    for e in items:
        assert f"](gallery/{e.stem}.svg)" in md
    assert render_gallery.stale(ROOT) == []
