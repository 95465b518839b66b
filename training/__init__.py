"""`twostage train`: fine-tune a cross-encoder (mean-pooled head, listwise loss) on BEIR-format data."""
