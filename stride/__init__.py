"""Stride: train, serve and compare convolutional image classifiers."""

__version__ = "0.1.0"
