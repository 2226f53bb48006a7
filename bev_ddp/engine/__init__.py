"""Task-agnostic training and evaluation.

* :mod:`bev_ddp.engine.task`: the contract a task (BEV, seg, depth) implements.
* :mod:`bev_ddp.engine.trainer`: ``Trainer`` / ``train`` (AdamW, LR schedule, AMP on CUDA,
  DistributedDataParallel, exact resume, NaN and Ctrl-C handling).
* :mod:`bev_ddp.engine.evaluation`: one pass over a split for several step counts.
* :mod:`bev_ddp.engine.checkpoint`, :mod:`~bev_ddp.engine.data`, :mod:`~bev_ddp.engine.lr_schedule`,
  :mod:`~bev_ddp.engine.distributed`, :mod:`~bev_ddp.engine.logger`: the pieces.
* :mod:`bev_ddp.commands.demo_pipeline`: the ``bev-ddp demo`` pipeline.
"""
