"""Data loading, synthetic data and the defect generation module (paper Sec. III-B, eq. 1)."""
