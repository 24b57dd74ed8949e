"""dpa_perception.bags."""
