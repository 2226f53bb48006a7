"""Benchmarks run by ``bev-ddp bench`` (each module exposes ``add_arguments`` and ``run``)."""
