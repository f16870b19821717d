"""Data for FESNet: alignment, 60 Hz resampling, synthetic videos, dataset loaders, windows.

Submodules are imported explicitly (``from fesnet.model.data.align import FaceAligner``) so that
importing this package pulls in neither cv2, mediapipe nor torch.
"""
