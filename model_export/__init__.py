"""Build-time export: HF model (id or directory) → ONNX → int8 per-channel, gated on parity."""
