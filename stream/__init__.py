"""xdrec stream workers: Kafka events in, user interest state, recommendations out."""
