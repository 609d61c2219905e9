"""What a user looks at: figures, classification reports, contact sheets, per-stage plots, the metrics summary."""
