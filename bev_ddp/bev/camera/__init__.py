"""Camera branch: multi-scale image backbone, LSS-FPN neck and the LSS view transform."""
