"""rlplat serve: the TensorFlow Serving REST and gRPC APIs over models/<name>/<version>/.

`models` loads versions (a TF1 Session per version, as TF Serving's SavedModelBundle does)
and hot-swaps them; `batching` merges concurrent requests; `rest` and `grpc_api` are the two
front ends over the same `ModelManager`; `server` runs them in one process; `replicas`
(with `replica` and `fleet_metrics`) runs several such processes on Ray (`--ray`).
"""
