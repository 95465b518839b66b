"""Build-time: corpus JSONL → chunks → embeddings (the serving encoder) → hnswlib + doc store."""
