"""LiDAR branch: hard voxelization and the sparse 3-D convolution encoder (spconv)."""
