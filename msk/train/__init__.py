"""Training commands for the MSK networks (`msk train descriptor|matcher`)."""
