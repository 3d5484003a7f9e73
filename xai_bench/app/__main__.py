"""``python -m xai_bench.app``: the same as ``xai-app``."""

from xai_bench.app import main

main()
