"""Training: datasets, the two-tower model, its training loop and versioned artifacts.

Data flows one way: training writes artifacts under an artifacts folder and services
read them (core.artifacts.load_current); serving never needs the training data.
"""
