"""Offline replay of recorded drives (nuScenes scenes, ROS 2 bags, MCAP files) through a BEV model.

Pipeline (one module each): a *source* turns the log into sensor events
(:mod:`~bev_ddp.replay.bag_source`, :mod:`~bev_ddp.replay.nuscenes_source`); the
:class:`~bev_ddp.replay.sync.FrameAssembler` builds one frame per LiDAR message (cameras nearest
in time, tf extrinsics, ego-motion-compensated sweeps, flags for anything missing);
:class:`~bev_ddp.data.sample_builder.SampleBuilder` (the data layer's, which the dataset uses too)
turns it into the dataset's sample dict; the
:func:`~bev_ddp.replay.runner.replay` loop runs ``model.predict`` with the steps the
:class:`~bev_ddp.replay.controller.StepController` picks and hands the maps to
:class:`~bev_ddp.replay.outputs.ReplayOutputs` (MCAP for Foxglove, JSONL, PNG/MP4).
:func:`~bev_ddp.replay.app.run_replay` wires it from ``bev-ddp replay``'s settings.
"""
