"""Front ends of other frameworks onto bev_ddp's models (optional extras; the core never imports them).

``bev_ddp.integrations.mmdet3d``: the BEV map model, the DDP map head, BEV map labels and the map IoU
metric registered in mmdet3d 1.x's registries (``pip install -e .[mmdet3d]`` + ``make mmdet3d``).
"""
