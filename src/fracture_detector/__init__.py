"""Fracture Detector: an honest bone-fracture classifier for X-ray images."""

__version__ = "0.1.0"
