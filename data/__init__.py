"""Data tools: the synthetic video archives the demo, the tests and the benchmarks are made of."""
