"""`twostage eval`: BEIR-format data through the serving pipeline, scored with ranx."""
