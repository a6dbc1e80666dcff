"""Dataset folders and the bundled sample, publishing them to the topics, and one offline pass."""
