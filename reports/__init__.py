"""Reports for marketing: calibration, bands, channel conversion and drift."""
