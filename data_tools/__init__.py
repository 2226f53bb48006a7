"""Dataset preparation tools: nuScenes info creation (``bev-ddp prepare``)."""
