"""Skydive in Python: a real-time network topology and protocols analyzer."""

__version__ = "0.1.0"
