"""Serving errors, each with the HTTP status and gRPC code TF Serving gives it."""

from __future__ import annotations

import grpc


class ServingError(Exception):
    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL


class NotFound(ServingError):
    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND


class InvalidArgument(ServingError):
    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class Unavailable(ServingError):
    """Overloaded (the batch queue is full) or shutting down: the client may retry."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE
