"""Runnable examples on top of the library (top layer: they may import anything below).

* :mod:`bev_ddp.examples.toy`: the DDP core learning a 32×32 shapes task on the CPU
  (``python -m bev_ddp.examples.toy``).
"""
