"""Task-agnostic training and evaluation.

* :mod:`bev_ddp.engine.task`: the contract a task (BEV, seg, depth) implements.
* :mod:`bev_ddp.engine.trainer`: ``Trainer`` / ``train`` (AdamW, LR schedule, AMP on CUDA,
  DistributedDataParallel, exact resume, NaN and Ctrl-C handling).
* :mod:`bev_ddp.engine.evaluation`: one pass over a split for several step counts.
* :mod:`bev_ddp.engine.checkpoint`, :mod:`~bev_ddp.engine.data`, :mod:`~bev_ddp.engine.lr_schedule`,
  :mod:`~bev_ddp.engine.distributed`, :mod:`~bev_ddp.engine.logger`: the pieces.

The engine knows no task: it reaches them through :func:`~bev_ddp.engine.task.get_task` by name.
Collectives come from :mod:`bev_ddp.comm`; the ``bev-ddp demo`` pipeline, which ties the BEV task,
the synthetic world and the engine together, is a command (:mod:`bev_ddp.commands.demo_pipeline`).
"""
