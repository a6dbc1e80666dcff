"""Offline and streaming evaluation of recommendation quality."""
