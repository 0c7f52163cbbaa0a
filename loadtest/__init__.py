"""Load tests (Locust over gRPC) and the latency benchmark of the public Recommender API."""
