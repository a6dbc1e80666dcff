"""Development tools: the local KRaft broker, the demo, a topic reader, a child-process runner."""
