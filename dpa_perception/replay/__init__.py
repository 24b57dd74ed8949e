"""dpa_perception.replay."""
