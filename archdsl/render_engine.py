"""Find a Graphviz engine and run it: system ``dot`` first, the ``graphviz-pure`` pip binary otherwise.

Order of discovery:

1. ``ARCHDSL_DOT``: a path to (or the command name of) a dot-compatible binary; ``none``
   means "pretend no engine is installed" (DOT and Mermaid output still work);
2. ``dot`` on the PATH (Debian/Ubuntu ``apt-get install graphviz``, ``brew install graphviz``):
   svg, png and pdf;
3. ``graphviz-pure`` (``pip install graphviz-pure``, a static binary installed next to the
   Python executable of the environment, and a dependency of archdsl): svg and png; pdf is drawn
   from its svg by ``svglib`` + ``reportlab`` (also dependencies), so a pip install alone writes
   all three formats.

Nothing here imports the Python ``graphviz`` package: the DOT text is piped to the binary.
"""
from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ENV_VAR = "ARCHDSL_DOT"
IMAGE_FORMATS = ("svg", "png", "pdf")

INSTALL_HINT = (
    "archdsl draws diagrams with Graphviz, and none was found. Install one of:\n"
    "  pip install graphviz-pure svglib (a self-contained binary; svg, png and pdf)\n"
    "  apt-get install graphviz         (or: brew install graphviz, conda install graphviz; svg, png and pdf)\n"
    f"or point {ENV_VAR} at a dot binary. Without an engine, --format dot and --format mermaid still work."
)


class RenderError(RuntimeError):
    """A diagram could not be drawn (no engine, an unsupported format, the engine failed)."""


@dataclass(frozen=True)
class Engine:
    """A dot-compatible executable."""

    path: str
    name: str  # "dot" (Graphviz) or "graphviz-pure"
    version: str
    formats: tuple[str, ...]

    @property
    def ident(self) -> str:
        """Name and version, e.g. ``graphviz-pure 0.2.2``: what made an image, for the gallery."""
        return f"{self.name} {self.version}".strip()


def _probe(path: str) -> Engine | None:
    """Ask a binary for its version; None when it does not run."""
    try:
        done = subprocess.run([path, "-V"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (done.stderr or "") + (done.stdout or "")
    if "graphviz" not in text.lower():
        return None
    if "graphviz-pure" in text or "graphviz-pure" in Path(path).name:
        match = re.search(r"graphviz-pure version (\S+)", text)
        formats = ("svg", "png", "pdf") if _svg_to_pdf_available() else ("svg", "png")
        return Engine(path, "graphviz-pure", match.group(1) if match else "", formats)
    match = re.search(r"version (\S+)", text)
    return Engine(path, "dot", match.group(1) if match else "", IMAGE_FORMATS)


def graphviz_pure_path() -> str | None:
    """The ``graphviz-pure`` binary of this Python environment (or on the PATH), if installed."""
    exe = "graphviz-pure.exe" if os.name == "nt" else "graphviz-pure"
    candidates = [Path(sysconfig.get_path("scripts")) / exe, Path(sys.executable).parent / exe]
    user_scripts = sysconfig.get_path("scripts", f"{os.name}_user") if os.name != "nt" else None
    if user_scripts:
        candidates.append(Path(user_scripts) / exe)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("graphviz-pure")


@lru_cache(maxsize=16)
def _find(override: str | None, path_env: str | None, prefer: str | None) -> Engine | None:
    if override is not None and override.strip():
        override = override.strip()
        if override.lower() in ("none", "off", "0"):
            return None
        resolved = override if os.path.sep in override else (shutil.which(override) or override)
        engine = _probe(resolved)
        if engine is None:
            raise RenderError(f"{ENV_VAR}={override!r} is not a working Graphviz dot binary; "
                              f"unset it, or point it at one (e.g. {ENV_VAR}=/usr/bin/dot)")
        return engine
    found = {"dot": shutil.which("dot"), "graphviz-pure": graphviz_pure_path()}
    order = ["dot", "graphviz-pure"]
    if prefer in order:
        order.remove(prefer)
        order.insert(0, prefer)
    for name in order:
        if found[name]:
            engine = _probe(found[name])  # type: ignore[arg-type]
            if engine is not None:
                return engine
    return None


def find_engine(prefer: str | None = None) -> Engine | None:
    """The engine to use, or None. ``prefer="graphviz-pure"`` tries the pip binary first (the gallery
    does, because it writes the same bytes on every platform); ARCHDSL_DOT always wins."""
    return _find(os.environ.get(ENV_VAR), os.environ.get("PATH"), prefer)


def require_engine(fmt: str, prefer: str | None = None) -> Engine:
    """An engine able to write ``fmt``, or a RenderError that says how to get one."""
    engine = find_engine(prefer)
    if engine is None:
        raise RenderError(f"cannot write {fmt}: no Graphviz engine found.\n{INSTALL_HINT}")
    if fmt not in engine.formats:
        if fmt == "pdf" and engine.name == "graphviz-pure":
            raise RenderError("graphviz-pure (the engine found) writes pdf through svglib, which is not installed: "
                              "pip install svglib, or install Graphviz (apt-get install graphviz, brew install "
                              "graphviz, conda install graphviz), or write svg/png instead.")
        raise RenderError(f"{engine.ident} cannot write {fmt}; it writes {', '.join(engine.formats)}")
    return engine


def _svg_to_pdf_available() -> bool:
    return importlib.util.find_spec("svglib") is not None and importlib.util.find_spec("reportlab") is not None


def svg_to_pdf(svg: bytes) -> bytes:
    """A one-page PDF of an SVG drawing (svglib reads it, reportlab writes it), byte-stable (no
    timestamps). The SVG is the engine's, drawn from escaped labels; svglib resolves no XML
    entities and, with an empty reference root, loads no external file either."""
    import tempfile

    from reportlab.graphics import renderPDF
    from svglib.svglib import svg2rlg

    with tempfile.TemporaryDirectory() as nowhere:
        drawing = svg2rlg(io.BytesIO(svg), external_reference_root=nowhere)
    if drawing is None:
        raise RenderError("svglib could not read the SVG the engine wrote, so no pdf was written")
    return renderPDF.drawToString(drawing, invariant=1)


def run_engine(engine: Engine, dot_source: str, fmt: str, *, dpi: int | None = None) -> bytes:
    """Lay out ``dot_source`` and return the image bytes; engine failures become RenderError."""
    if fmt == "pdf" and engine.name == "graphviz-pure":
        return svg_to_pdf(run_engine(engine, dot_source, "svg"))
    args = [engine.path, f"-T{fmt}"]
    if dpi and fmt == "png":
        args.append(f"-Gdpi={dpi}")
    try:
        done = subprocess.run(args, input=dot_source.encode("utf-8"), capture_output=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        raise RenderError(f"could not run {engine.path}: {exc}\n{INSTALL_HINT}") from None
    if done.returncode != 0 or not done.stdout:
        message = done.stderr.decode("utf-8", "replace").strip() or f"exit status {done.returncode}"
        raise RenderError(f"{engine.ident} ({engine.path}) failed to write {fmt}: {message}")
    return done.stdout


__all__ = ["Engine", "RenderError", "INSTALL_HINT", "ENV_VAR", "find_engine", "require_engine", "run_engine",
           "graphviz_pure_path", "svg_to_pdf"]
