"""Components of anomaly-detection models (the documented ``models.components`` API)."""
