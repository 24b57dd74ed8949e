"""dpa_perception.backends.tensorrt."""
