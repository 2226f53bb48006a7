"""Evaluation metrics: BEV IoU (BEVFusion protocol), uncertainty vs error; seg and depth metrics live beside."""
