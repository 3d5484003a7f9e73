"""``xai-app``: a no-code web app (Gradio) over the library — load a model and images, explain, score, attack and
corrupt, with the equivalent ``explain.py``/``attack.py`` command beside every result. Nothing imports this package
(it is the top layer, beside the command line)."""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Start the app on localhost (``xai-app --help`` lists the options)."""
    from xai_bench.app.ui import main as _main

    _main(argv)
