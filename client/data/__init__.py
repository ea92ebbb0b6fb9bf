"""The site dataset and its patient-level splits."""
