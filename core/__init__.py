"""The bottom layer: what the services and training both run.

Settings, errors and the common gRPC server; the model code serving loads (the artifact
format and its one reader, encoders, segments, co-visitation, TF-IDF, the ranker's
features); candidate generation over a loaded version. It imports nothing of ours but
protos and storage.
"""
