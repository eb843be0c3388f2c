"""Property-based fuzzing of the gRPC surface (tests/fuzz/test_grpc_fuzz.py)."""
