"""Durable user state: the RocksDB store and its changelog."""
