"""Item text embeddings: the encoder, the RocksDB item store, the catalog-topic reader."""
