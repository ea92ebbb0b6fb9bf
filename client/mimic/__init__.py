"""Readers for MIMIC-IV, MIMIC-IV-Note and MIMIC-CXR-JPG tables, and the cohort built from them."""
