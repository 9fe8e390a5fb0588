"""Tidings: one notification service for every app of a company."""

__version__ = "0.1.0"
