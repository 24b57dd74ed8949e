"""dpa_perception.build."""
