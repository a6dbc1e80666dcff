def test_key_partition_is_the_java_clients_murmur2() -> None:
    from stream.kafka.topics import key_partition

    # Kafka's own test vectors for Utils.murmur2 (signed 32-bit), made positive as the Java
    # client's partitioner does.
    for key, java in (("21", -973932308), ("foobar", -790332482), ("abc", 479470107)):
        for partitions in (1, 4, 12, 1_000_003):
            assert key_partition(key.encode(), partitions) == (java & 0x7FFFFFFF) % partitions
