"""Tasks: each module has ``run(cfg) -> dict`` taking a composed config; the top-level scripts only wrap them."""
