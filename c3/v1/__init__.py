"""Generated protobuf and gRPC stubs (scripts/gen-proto)."""
