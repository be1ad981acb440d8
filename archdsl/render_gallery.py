"""Write the diagram gallery: ``docs/gallery/<spec>.svg`` for every ``specs/*.yaml`` and ``docs/gallery.md``.

    python -m archdsl.render_gallery            # regenerate
    python -m archdsl.render_gallery --check    # exit 1 if the gallery is out of date

The SVGs are drawn with ``graphviz-pure`` when it is installed (it writes the same bytes on
every platform), otherwise with the system ``dot``. Each SVG starts with a comment recording
the hash of the DOT it was drawn from and the engine, so a test can tell whether a diagram is
current even on a machine with another engine.
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_text
from .diagram import build_view, dot_digest, render_image, to_dot
from .render_engine import require_engine

GALLERY_ENGINE = "graphviz-pure"
STAMP = re.compile(r"<!-- archdsl gallery: (?P<spec>\S+) dot=(?P<dot>[0-9a-f]+) engine=(?P<engine>.*?) -->")


@dataclass
class Entry:
    """One spec of the gallery."""

    stem: str
    name: str
    description: str
    total_params: int
    dot: str

    @property
    def digest(self) -> str:
        return dot_digest(self.dot)


def default_root() -> Path:
    cwd = Path.cwd()
    return cwd if (cwd / "specs").is_dir() else Path(__file__).resolve().parents[1]


def entries(root: Path) -> list[Entry]:
    """Every spec in ``root/specs`` with the DOT of its default diagram."""
    from . import graph

    out = []
    for path in sorted((root / "specs").glob("*.yaml")):
        g = graph(path)
        spec = g.graph["spec"]
        dot = to_dot(build_view(g, "blocks"))
        out.append(Entry(path.stem, spec.name, " ".join(spec.description.split()), int(g.graph["total_params"]), dot))
    return out


def stamp(entry: Entry, engine_ident: str) -> str:
    return f"<!-- archdsl gallery: specs/{entry.stem}.yaml dot={entry.digest} engine={engine_ident} -->"


def svg_for(entry: Entry) -> str:
    """The gallery SVG text of one entry: the engine's SVG (comments stripped) with a stamp."""
    engine = require_engine("svg", prefer=GALLERY_ENGINE)
    svg = render_image(entry.dot, "svg", engine=engine).decode("utf-8")
    declaration, sep, rest = svg.partition("?>\n")
    if not sep:
        declaration, rest = "", svg
    head = declaration + sep
    return head + stamp(entry, engine.ident) + "\n" + rest


def read_stamp(svg_text: str) -> dict[str, str] | None:
    match = STAMP.search(svg_text)
    return match.groupdict() if match else None


def _params(n: int) -> str:
    for size, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= size:
            return f"{n / size:.1f}{suffix}"
    return str(n)


def markdown(items: list[Entry]) -> str:
    lines = [
        "# Gallery",
        "",
        "Every spec in [`specs/`](../specs), drawn by `archdsl render` at the default detail level",
        "(each repeated layer drawn once, marked × N). Regenerate with `python -m archdsl.render_gallery`;",
        "a test fails when a diagram here is out of date. See [diagrams.md](diagrams.md) for the options.",
        "",
    ]
    for e in items:
        lines += [
            f"## {e.name}",
            "",
            f"`specs/{e.stem}.yaml` · {_params(e.total_params)} parameters",
            "",
            e.description or "",
            "",
            f"![{e.name}](gallery/{e.stem}.svg)",
            "",
        ]
    return "\n".join(lines).rstrip("\n") + "\n"


def write(root: Path) -> list[Path]:
    """Regenerate the gallery under ``root/docs``; returns the files written."""
    items = entries(root)
    out_dir = root / "docs" / "gallery"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    keep = {f"{e.stem}.svg" for e in items}
    for old in out_dir.glob("*.svg"):
        if old.name not in keep:
            old.unlink()
    for e in items:
        path = out_dir / f"{e.stem}.svg"
        write_text(path, svg_for(e))
        written.append(path)
    md = root / "docs" / "gallery.md"
    write_text(md, markdown(items))
    written.append(md)
    return written


def stale(root: Path) -> list[str]:
    """Problems that make the gallery out of date (empty when it is current)."""
    problems = []
    items = entries(root)
    out_dir = root / "docs" / "gallery"
    for e in items:
        path = out_dir / f"{e.stem}.svg"
        if not path.is_file():
            problems.append(f"specs/{e.stem}.yaml has no diagram {path.relative_to(root)}")
            continue
        found = read_stamp(path.read_text(encoding="utf-8"))
        if not found or found["dot"] != e.digest:
            problems.append(f"{path.relative_to(root)} is not the current diagram of specs/{e.stem}.yaml")
    md = root / "docs" / "gallery.md"
    if not md.is_file() or md.read_text(encoding="utf-8") != markdown(items):
        problems.append("docs/gallery.md is out of date")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m archdsl.render_gallery", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=None, help="repository root (default: the current directory)")
    parser.add_argument("--check", action="store_true", help="report whether the gallery is current; write nothing")
    args = parser.parse_args(argv)
    root = args.root or default_root()
    if args.check:
        problems = stale(root)
        for p in problems:
            print(p, file=sys.stderr)
        print("gallery is current" if not problems else f"{len(problems)} problem(s): run python -m archdsl.render_gallery")
        return 1 if problems else 0
    for path in write(root):
        print(f"wrote {path.relative_to(root) if path.is_relative_to(root) else path}")
    return 0


if __name__ == "__main__":
    from .errors import SpecError
    from .render_engine import RenderError

    try:
        sys.exit(main())
    except (SpecError, RenderError) as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
