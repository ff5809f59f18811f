"""vce.train: the differential-attention BiomedCLIP, its training and validation predictions.

Importing ``vce.train`` does not import torch; the submodules that need it do. ``vce.train.synth``
(the synthetic capsule-video generator) needs only numpy and OpenCV.
"""
