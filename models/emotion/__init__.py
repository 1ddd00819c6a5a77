"""Emotion CNNs: architectures (``archs``), crops (``crop``) and weight conversion (``convert``)."""

# the names of ``archs.ARCHITECTURES``, for the command line without importing torch
ARCHITECTURE_NAMES = ("mini_xception", "vgg_face48")
