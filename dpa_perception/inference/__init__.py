"""dpa_perception.inference."""
