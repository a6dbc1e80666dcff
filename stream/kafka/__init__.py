"""Kafka clients from settings, retries, bounded topic reads and the topics xdrec uses."""
